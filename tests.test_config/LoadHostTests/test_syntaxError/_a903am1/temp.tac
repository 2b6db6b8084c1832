from salvusctl.host import Host
host = Host(
  name='x',,
)
