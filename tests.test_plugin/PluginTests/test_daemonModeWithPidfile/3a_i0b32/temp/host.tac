from salvusctl.host import Host
host = Host("daemon", store="sqlite:/work/main/tests.test_plugin/PluginTests/test_daemonModeWithPidfile/3a_i0b32/temp/var/salvus.db", var="/work/main/tests.test_plugin/PluginTests/test_daemonModeWithPidfile/3a_i0b32/temp/var")
