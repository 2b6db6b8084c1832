/* salvus-spawn: what an instance needs between spawn and exec, in one small static program.
 *
 * Usage: salvus-spawn [-p PARENT] [-d SIGNAL] [-r RESOURCE:SOFT:HARD]... [-c DIR] [-m UMASK] [-g CGROUP.PROCS]
 *                    -- PROGRAM ARG...
 *
 * The supervisor posix_spawns this with setsid already done.  It joins the instance's cgroup
 * (writes its pid to CGROUP.PROCS: before anything runs, so nothing of the instance is ever
 * outside it), asks the kernel for SIGNAL when
 * the parent dies (and exits if the parent PARENT is already gone), applies rlimits, sets the
 * umask (octal), changes directory, closes every descriptor above 2 (so the supervisor need not
 * list and mark its own descriptors before each spawn), then execvp()s PROGRAM.  A failure prints
 * one line on stderr and exits 127.  Instances run as another user have setpriv as PROGRAM: the
 * work that needs root (rlimits above the hard limit) is done here, before the user changes.
 * Built once, on first use, by salvusctl.supervisor.oscalls (cc -O2 -static).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <dirent.h>
#include <sys/syscall.h>
#include <unistd.h>

static void fail(const char *what, const char *arg) {
    fprintf(stderr, "salvus-spawn: %s %s: %s\n", what, arg ? arg : "", strerror(errno));
    _exit(127);
}

static rlim_t limit(const char *s) {
    if (strcmp(s, "unlimited") == 0) return RLIM_INFINITY;
    return (rlim_t)strtoull(s, NULL, 10);
}

/* Close every descriptor from 3 up: close_range(2) where the kernel has it, else /proc/self/fd. */
static void closeFrom3(void) {
#ifdef SYS_close_range
    if (syscall(SYS_close_range, 3U, ~0U, 0U) == 0) return;
#endif
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) {
        long max = sysconf(_SC_OPEN_MAX);
        if (max < 0 || max > 65536) max = 65536;
        for (long fd = 3; fd < max; fd++) close((int)fd);
        return;
    }
    int self = dirfd(d);
    int fds[1024];
    int n;
    do {
        n = 0;
        struct dirent *e;
        rewinddir(d);
        while ((e = readdir(d)) != NULL && n < 1024) {
            int fd = atoi(e->d_name);
            if (fd > 2 && fd != self) fds[n++] = fd;
        }
        for (int k = 0; k < n; k++) close(fds[k]);
    } while (n == 1024);
    closedir(d);
}

int main(int argc, char **argv) {
    long parent = 0;
    int i = 1;
    const char *dir = NULL;
    for (; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) { i++; break; }
        if (i + 1 >= argc) { errno = EINVAL; fail("missing value for", a); }
        const char *v = argv[++i];
        if (strcmp(a, "-p") == 0) {
            parent = strtol(v, NULL, 10);
        } else if (strcmp(a, "-d") == 0) {
            if (prctl(PR_SET_PDEATHSIG, strtol(v, NULL, 10), 0, 0, 0) != 0) fail("prctl", v);
            if (parent && getppid() != parent) _exit(1);  /* the parent died before prctl */
        } else if (strcmp(a, "-r") == 0) {
            char buf[128];
            strncpy(buf, v, sizeof buf - 1);
            buf[sizeof buf - 1] = 0;
            char *soft = strchr(buf, ':');
            char *hard = soft ? strchr(soft + 1, ':') : NULL;
            if (!soft || !hard) { errno = EINVAL; fail("bad rlimit", v); }
            *soft++ = 0;
            *hard++ = 0;
            struct rlimit rl = {limit(soft), limit(hard)};
            if (setrlimit(atoi(buf), &rl) != 0) fail("setrlimit", v);
        } else if (strcmp(a, "-c") == 0) {
            dir = v;
        } else if (strcmp(a, "-g") == 0) {
            FILE *f = fopen(v, "w");
            if (f == NULL || fprintf(f, "%ld\n", (long)getpid()) < 0 || fclose(f) != 0) fail("join cgroup", v);
        } else if (strcmp(a, "-m") == 0) {
            umask((mode_t)strtol(v, NULL, 8));
        } else {
            errno = EINVAL;
            fail("unknown option", a);
        }
    }
    if (i >= argc) { errno = EINVAL; fail("no program", NULL); }
    if (dir && chdir(dir) != 0) fail("chdir", dir);
    closeFrom3();
    execvp(argv[i], argv + i);
    fail("exec", argv[i]);
    return 127;
}
