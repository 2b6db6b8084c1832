from salvusctl.host import Host
host = Host('x', store='sqlite:')
application = host.application()
