from salvusctl.host import Host
host = Host('x', store='nosuch:db')
