// fork + exec in C because the child must call prctl(PR_SET_PDEATHSIG) between the two: posix_spawn
// has no hook for it, and Swift code must not run in the child of a multi-threaded process. Only
// async-signal-safe calls happen after fork.
//
// The forked child is a small guardian, not the program: it leads a new process group, forks the
// program into that group and waits for it. When the parent dies (even by SIGKILL) the guardian gets
// SIGHUP as its parent-death signal and kills the whole group, so the program's own children (pip's
// or apt's helpers) die too; a parent-death signal alone reaches only the direct child.
#define _GNU_SOURCE
#include "CLongMixerProcess.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

int longmixer_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC) == 0 ? 0 : -errno;
}

static void kill_group(int signal_number) {
    (void)signal_number;
    kill(0, SIGKILL);
}

static void close_range_from(unsigned low, unsigned high) {
    if (low > high) return;
    if (syscall(SYS_close_range, low, high, 0) == 0) return;
    // Kernels before 5.9: close one by one up to a bound.
    for (unsigned fd = low; fd <= high && fd < 65536; fd++) close((int)fd);
}

/// Closes every descriptor from 3 up except `a`, `b` and `c` (negative: none).
static void close_all_but(int a, int b, int c) {
    int keep[3] = {a, b, c};
    // Sort the three so the gaps between them are ranges.
    for (int i = 0; i < 3; i++)
        for (int j = i + 1; j < 3; j++)
            if (keep[j] < keep[i]) { int t = keep[i]; keep[i] = keep[j]; keep[j] = t; }
    unsigned low = 3;
    for (int i = 0; i < 3; i++) {
        if (keep[i] < (int)low) continue;
        close_range_from(low, (unsigned)keep[i] - 1);
        low = (unsigned)keep[i] + 1;
    }
    close_range_from(low, ~0U);
}

static void report_and_exit(int fd, int error) {
    (void)!write(fd, &error, sizeof error);
    _exit(127);
}

/// The guardian's body: never returns.
static void guard(pid_t parent, const char *path, char *const argv[], char *const envp[], int out_fd, int err_fd, int report) {
    setpgid(0, 0);
    // The forking thread may block signals (runtimes do); a blocked SIGHUP would never arrive, and
    // the program would inherit the mask through exec.
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    // Keep only what the program needs: descriptors another thread had open at fork time (a file
    // being written, a test's output pipe) would otherwise stay open as long as the program runs.
    close_all_but(report, out_fd, err_fd);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, 0);
        if (out_fd != 1) dup2(devnull, 1);
        if (err_fd != 2) dup2(devnull, 2);
        if (devnull > 2 && devnull != out_fd && devnull != err_fd && devnull != report) close(devnull);
    }
    struct sigaction hangup = {0};
    hangup.sa_handler = kill_group;
    sigemptyset(&hangup.sa_mask);
    sigaction(SIGHUP, &hangup, NULL);
    // A timeout sends SIGTERM to the group: the program decides what to do, the guardian stays to
    // report its status (the SIGKILL after the grace period takes everyone).
    signal(SIGTERM, SIG_IGN);
    if (prctl(PR_SET_PDEATHSIG, SIGHUP) != 0 || getppid() != parent) kill_group(0);

    pid_t guardian = getpid();
    pid_t program = fork();
    if (program < 0) report_and_exit(report, errno);
    if (program == 0) {
        if (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != guardian) _exit(127);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) { dup2(devnull, 0); if (devnull != 0) close(devnull); }
        if (out_fd >= 0) dup2(out_fd, 1);
        if (err_fd >= 0) dup2(err_fd, 2);
        // The default dispositions the program expects (ignored signals survive exec).
        signal(SIGPIPE, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        execve(path, argv, envp);
        report_and_exit(report, errno);
    }
    close(report);
    if (out_fd >= 0) close(out_fd);
    if (err_fd >= 0) close(err_fd);
    int status = 0;
    while (waitpid(program, &status, 0) < 0) {
        if (errno != EINTR) _exit(127);
    }
    // Children the program left behind do not outlive it.
    kill(0, SIGTERM);
    if (WIFEXITED(status)) _exit(WEXITSTATUS(status));
    // Mirror a death by signal so the parent sees the program's status.
    int signal_number = WTERMSIG(status);
    signal(signal_number, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    kill(getpid(), signal_number);
    _exit(128 + signal_number);
}

pid_t longmixer_spawn(const char *path, char *const argv[], char *const envp[], int out_fd, int err_fd) {
    int report[2];
    if (pipe2(report, O_CLOEXEC) != 0) return -errno;
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        return -e;
    }
    if (pid == 0) {
        close(report[0]);
        guard(parent, path, argv, envp, out_fd, err_fd, report[1]);
    }
    close(report[1]);
    int e = 0;
    ssize_t n;
    do { n = read(report[0], &e, sizeof e); } while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof e) {
        int status;
        while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {}
        return -e;
    }
    return pid;
}

// A signal handler may only touch a volatile sig_atomic_t; the training loop polls it between steps.
static volatile sig_atomic_t stop_signal = 0;

static void record_stop_signal(int signal_number) {
    if (stop_signal == 0) stop_signal = signal_number;
}

int longmixer_catch_stop_signals(void) {
    struct sigaction action = {0};
    action.sa_handler = record_stop_signal;
    sigemptyset(&action.sa_mask);
    action.sa_flags = SA_RESETHAND | SA_RESTART;
    stop_signal = 0;
    if (sigaction(SIGINT, &action, NULL) != 0 || sigaction(SIGTERM, &action, NULL) != 0) return -errno;
    // A process can inherit them blocked (some launchers block signals in the thread that spawns):
    // unblocked here, in the calling thread, they reach the handler.
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGINT);
    sigaddset(&stop_signals, SIGTERM);
    return pthread_sigmask(SIG_UNBLOCK, &stop_signals, NULL) == 0 ? 0 : -errno;
}

int longmixer_stop_signal(void) { return stop_signal; }

void longmixer_release_stop_signals(void) {
    signal(SIGINT, SIG_DFL);
    signal(SIGTERM, SIG_DFL);
    stop_signal = 0;
}
