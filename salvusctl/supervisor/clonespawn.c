/* clonespawn: posix_spawn's work, but the child is born in its cgroup (clone3 CLONE_INTO_CGROUP).
 *
 * Loaded into the supervisor with ctypes (built once by salvusctl.supervisor.clonespawn,
 * cc -O2 -shared -fPIC).  Why: writing a pid into cgroup.procs migrates a running process, and a
 * migration takes the kernel's cgroup threadgroup lock for writing, which waits out an RCU grace
 * period (5-13 ms measured here): most of a crash -> respawn cycle.  A child created inside its
 * cgroup takes no such lock, and is never outside it, not even between fork and exec.
 *
 * salvus_spawn() does what CPython's os.posix_spawn(setsid=True, setsigdef=..., file_actions=...)
 * does: a vfork-like clone (CLONE_VM | CLONE_VFORK, the child on its own small stack, the parent
 * suspended until the child execs or exits), then in the child: every signal back to its default
 * (so setsigdef needs no list of the ignored ones), the parent's signal mask, setsid(), the file actions (dup2 / close), execve().  All
 * signals are blocked in the parent around the clone, so no handler of the supervisor's runs in
 * the child, which shares its memory.  Returns the pid, or -errno (the child's failure to exec
 * not: that is *childErr, stored in shared memory before the child's _exit(127); the caller reaps
 * that child).  x86-64 only; elsewhere it returns -ENOSYS and the caller uses posix_spawn.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef CLONE_INTO_CGROUP
#define CLONE_INTO_CGROUP 0x200000000ULL
#endif
#ifndef CLONE_VM
#define CLONE_VM 0x00000100
#endif
#ifndef CLONE_VFORK
#define CLONE_VFORK 0x00004000
#endif
#ifndef SYS_clone3
#define SYS_clone3 435
#endif

struct clone_args_v2 {
    uint64_t flags, pidfd, child_tid, parent_tid, exit_signal, stack, stack_size, tls, set_tid,
        set_tid_size, cgroup;
};

/* actions: pairs (kind, a, b): kind 0 = dup2(a, b), 1 = close(a). */
struct job {
    const char *path;
    char *const *argv;
    char *const *envp;
    const int *actions;
    int nactions;
    const int *sigdef;
    int nsigdef;
    sigset_t oldmask;
    volatile int err;
};

static int child(struct job *j) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    /* Every signal to its default: the caught ones (their handlers live in the shared memory),
     * the ignored ones (posix_spawn's setsigdef of every ignored signal, without asking which). */
    for (int s = 1; s < _NSIG; s++) sigaction(s, &dfl, NULL);
    for (int i = 0; i < j->nsigdef; i++) sigaction(j->sigdef[i], &dfl, NULL);
    sigprocmask(SIG_SETMASK, &j->oldmask, NULL);
    if (setsid() < 0) goto fail;
    for (int i = 0; i < j->nactions; i++) {
        int kind = j->actions[3 * i], a = j->actions[3 * i + 1], b = j->actions[3 * i + 2];
        if (kind == 0) {
            if (a == b) {
                /* dup2 onto itself keeps close-on-exec: clear it, as posix_spawn does. */
                int flags = fcntl(a, F_GETFD);
                if (flags < 0 || fcntl(a, F_SETFD, flags & ~FD_CLOEXEC) < 0) goto fail;
            } else if (dup2(a, b) < 0) {
                goto fail;
            }
        } else if (kind == 1) {
            close(a);
        }
    }
    execve(j->path, j->argv, j->envp);
fail:
    j->err = errno ? errno : EINVAL;
    syscall(SYS_exit, 127);
    return 0;
}

#if defined(__x86_64__)
/* clone3 with the child on STACK: the child calls child(j) and never returns here. */
static long clone3Child(struct clone_args_v2 *args, struct job *j) {
    long ret;
    register long rdi __asm__("rdi") = (long)args;
    register long rsi __asm__("rsi") = (long)sizeof *args;
    register long r12 __asm__("r12") = (long)j;
    register long r13 __asm__("r13") = (long)child;
    __asm__ volatile(
        "syscall\n\t"
        "test %%rax, %%rax\n\t"
        "jnz 1f\n\t"
        "xor %%ebp, %%ebp\n\t"
        "and $-16, %%rsp\n\t"
        "mov %%r12, %%rdi\n\t"
        "call *%%r13\n\t"
        "mov $60, %%eax\n\t"
        "mov $127, %%edi\n\t"
        "syscall\n\t"
        "1:\n\t"
        : "=a"(ret)
        : "0"((long)SYS_clone3), "r"(rdi), "r"(rsi), "r"(r12), "r"(r13)
        : "rcx", "r11", "memory");
    return ret;
}
#endif

long salvus_spawn(const char *path, char *const *argv, char *const *envp, int cgroupfd,
                  const int *actions, int nactions, const int *sigdef, int nsigdef, int *childErr) {
#if defined(__x86_64__)
    const size_t size = 256 * 1024;
    void *stack = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_STACK, -1, 0);
    if (stack == MAP_FAILED) return -errno;
    struct job j = {path, argv, envp, actions, nactions, sigdef, nsigdef, {{0}}, 0};
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &j.oldmask);
    struct clone_args_v2 args;
    memset(&args, 0, sizeof args);
    args.flags = CLONE_VM | CLONE_VFORK | (cgroupfd >= 0 ? CLONE_INTO_CGROUP : 0);
    args.exit_signal = SIGCHLD;
    args.stack = (uint64_t)(uintptr_t)stack;
    args.stack_size = size;
    args.cgroup = cgroupfd >= 0 ? (uint64_t)cgroupfd : 0;
    long pid = clone3Child(&args, &j);
    int saved = pid < 0 ? (int)-pid : 0;
    pthread_sigmask(SIG_SETMASK, &j.oldmask, NULL);
    munmap(stack, size);
    if (pid < 0) return -saved;
    *childErr = j.err;
    return pid;
#else
    (void)path; (void)argv; (void)envp; (void)cgroupfd; (void)actions; (void)nactions;
    (void)sigdef; (void)nsigdef; (void)childErr;
    return -ENOSYS;
#endif
}
