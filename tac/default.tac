# The default single host: what `twistd -n salvus` runs with no --config.
# Run it as `twistd -ny tac/default.tac` or `twistd -n salvus --config tac/default.tac`.
from salvusctl.defaulthost import defaultHost

host = defaultHost(var="var")
application = host.application()
