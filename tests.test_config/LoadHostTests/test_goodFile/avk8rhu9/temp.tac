from salvusctl.host import Host
host = Host("web1", store="sqlite:var/x.db")
