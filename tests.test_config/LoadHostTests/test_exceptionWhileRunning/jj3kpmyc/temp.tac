from salvusctl.host import Host
host = Host("a")
x = 1 / 0
