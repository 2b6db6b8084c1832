# The default single host: what `twistd -n salvus` runs with no --config.
# Run it as `twistd -ny tac/default.tac` or `twistd -n salvus --config tac/default.tac`.
# Ports: env SALVUS_WEB_PORT (8080) and SALVUS_ADMIN_PORT (8443); state under env SALVUS_VAR (./var).
import os

from salvusctl.host.demo import defaultHost

host = defaultHost(var=os.environ.get("SALVUS_VAR", "var"))
application = host.application()
