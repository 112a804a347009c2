/*
 * The session supervisor: PID 1 of a session sandbox. It unpacks the submitted code once,
 * runs an optional compile step, then runs every test case as a fresh process, and reports
 * each step's result on its stdout in length-prefixed records tagged with the session's
 * nonce.
 *
 * Who can do what:
 *   - The supervisor runs as uid 0 with only CAP_SETUID, CAP_SETGID (to drop each step to the
 *     sandbox user) and CAP_KILL (to kill every process of a step in this PID namespace). It
 *     never runs submitted code itself.
 *   - Every step runs as uid/gid 65534 with no capabilities. It cannot signal or ptrace the
 *     supervisor (another uid, and PID 1 ignores signals it has no handler for), cannot open
 *     the supervisor's descriptors (/proc/1/fd needs ptrace access), and its stdout and
 *     stderr are pipes the supervisor reads and frames, so nothing it writes can be taken for
 *     a record.
 *   - Between steps: every process but PID 1 is killed and reaped, scratch (/tmp), /dev/shm,
 *     /dev/mqueue, the termination log Kubernetes mounts and the SysV IPC objects are emptied
 *     by a helper running as 65534, and the code directory belongs to root (files 0444,
 *     directories 0555), so a case cannot change what the next case sees.
 *
 * Unprivileged (started as any uid but 0, as under Kubernetes' "restricted" profile, where the
 * sandbox runs as 65534 with no capability): every step runs as the supervisor's own uid.
 * The supervisor is then still out of the program's reach for ptrace and /proc/1/fd (it is
 * not dumpable) and, as PID 1, for signals (PID 1 ignores those it has no handler for, SIGKILL
 * and SIGSTOP included, from inside its namespace); but the code is read-only only when it
 * lies on a read-only mount, the program can lower the supervisor's resource limits
 * (prlimit needs only the same uid), and a compile step's output stays in BUILD_DIR, which
 * the host mounts read-only for the cases itself.
 *
 * Input (stdin, or the file named by the first argument), every header one line of ASCII:
 *   "EVALPLATFORM-SESSION 1 <nonce>\n"                  nonce: 1..64 hex digits
 *   "A <length>\n" <archive>                             the code, unpacked into CODE_DIR
 *                                                       (length 0: the code is already there)
 *     archive: per file "<name_length> <size>\n" <name> <data>; root's, files 0444
 *   steps, each: "<K|C> <index> <wall_ms> <cpu_ms> <memory_bytes> <output_bytes>
 *                 <file_size_bytes> <open_files> <argv_length> <stdin_length>\n"
 *                <argv: NUL-terminated strings> <stdin>
 *     K: the compile step, run in a writable copy of the code (BUILD_DIR/work, or BUILD_DIR
 *        unprivileged); what it leaves becomes the read-only code directory of every case,
 *        and BUILD_DIR is emptied and closed. C: a case, run in the code directory.
 *   "Q\n" or end of input: exit.
 *
 * Output (stdout), one record per step:
 *   "<nonce> <R|X> <index> <exit_code> <signal> <wall_ms> <cpu_ms> <peak_bytes> <flags>
 *    <stdout_length> <stderr_length>\n" <stdout> <stderr>
 *   R: the step ran; exit_code is -1 when a signal ended it; flags: 1 timed out, 2 out of
 *   memory, 4 stdout truncated, 8 stderr truncated. X: the supervisor failed (the message is
 *   in the stdout payload); the session cannot go on and the supervisor exits.
 *   Unprivileged, a newline follows each record: there stdout is a container log, which a
 *   line-buffered collector (containerd's) passes on only at the end of a line.
 *
 * Exit status: 0; 1 when a compile step did not succeed (exit status 0 within every limit),
 * so that, run as a Kubernetes init container, it keeps the cases' container from starting;
 * 2 after an X record.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/msg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define SANDBOX_ID 65534
#define CODE_DIR "/sandbox/code"
#define BIN_DIR "/sandbox/bin"
#define BUILD_DIR "/sandbox/build"
#define BUILD_WORK_NAME "work"
#define BUILD_WORK BUILD_DIR "/" BUILD_WORK_NAME
#define TERMINATION_LOG "/dev/termination-log"
#define MAX_LINE 512
#define MAX_ARGV_BYTES (64 * 1024)
#define MAX_ARGS 256
#define MAX_DEPTH 64
#define CHUNK 65536
#define REAP_LIMIT_MS 5000

enum { TIMED_OUT = 1, OUT_OF_MEMORY = 2, STDOUT_TRUNCATED = 4, STDERR_TRUNCATED = 8 };

static const char *scratch_dirs[] = {"/tmp", "/dev/shm", "/dev/mqueue", NULL};
static char nonce[65];
static int privileged; /* started as root: each step drops to SANDBOX_ID */

struct buffer {
    char *data;
    size_t length, cap;
    int truncated;
};

struct step {
    char kind;
    long index;
    long wall_ms, cpu_ms;
    long long memory_bytes, output_bytes, file_size_bytes;
    long open_files;
    char *argv[MAX_ARGS + 1];
    char argv_bytes[MAX_ARGV_BYTES];
    long long stdin_length;
    const char *cwd;
    int as_root;
};

struct outcome {
    int exited, exit_code, signal;
    long wall_ms, cpu_ms;
    long long peak_bytes;
    int flags;
    struct buffer out, err;
};

/* --- small helpers ------------------------------------------------------------------------ */

static long long now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int write_all(int fd, const char *data, size_t length) {
    while (length) {
        ssize_t n = write(fd, data, length);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

static int read_exact(int fd, char *data, size_t length) {
    while (length) {
        ssize_t n = read(fd, data, length);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return -1;
        data += n;
        length -= (size_t)n;
    }
    return 0;
}

/* Read one header line from stdin byte by byte: nothing after it may be consumed. */
static int read_line(char *line, size_t size) {
    size_t used = 0;
    while (used + 1 < size) {
        char c;
        ssize_t n = read(0, &c, 1);
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return used ? -1 : 0;
        if (c == '\n') {
            line[used] = 0;
            return 1;
        }
        line[used++] = c;
    }
    return -1;
}

static void emit(char kind, long index, const struct outcome *o, const char *out, size_t out_len,
                 const char *err, size_t err_len) {
    char header[MAX_LINE];
    int n = snprintf(header, sizeof header, "%s %c %ld %d %d %ld %ld %lld %d %zu %zu\n", nonce,
                     kind, index, o->exited ? o->exit_code : -1, o->signal, o->wall_ms, o->cpu_ms,
                     o->peak_bytes, o->flags, out_len, err_len);
    if (write_all(1, header, (size_t)n) || write_all(1, out, out_len) ||
        write_all(1, err, err_len) || (!privileged && write_all(1, "\n", 1)))
        _exit(3);
}

/* Report that the session cannot go on, and end it. */
static void fail(long index, const char *format, ...) {
    char message[1024];
    va_list args;
    va_start(args, format);
    vsnprintf(message, sizeof message, format, args);
    va_end(args);
    struct outcome none = {0};
    if (nonce[0]) emit('X', index, &none, message, strlen(message), "", 0);
    else fprintf(stderr, "evalplatform-supervisor: %s\n", message);
    _exit(2);
}

static long long cgroup_counter(const char *file, const char *key) {
    char path[128], line[256];
    snprintf(path, sizeof path, "/sys/fs/cgroup/%s", file);
    FILE *f = fopen(path, "re");
    if (!f) return -1;
    long long value = -1;
    size_t key_len = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (!strncmp(line, key, key_len) && line[key_len] == ' ') {
            value = atoll(line + key_len + 1);
            break;
        }
    }
    fclose(f);
    return value;
}

/* The sandbox's CPU time so far, in microseconds (cgroup v2, else v1); -1 if unknown. */
static long long cgroup_cpu_usec(void) {
    long long usec = cgroup_counter("cpu.stat", "usage_usec");
    if (usec >= 0) return usec;
    FILE *f = fopen("/sys/fs/cgroup/cpuacct/cpuacct.usage", "re");
    if (!f) return -1;
    long long nsec = -1;
    if (fscanf(f, "%lld", &nsec) != 1) nsec = -1;
    fclose(f);
    return nsec < 0 ? -1 : nsec / 1000;
}

/* How many processes the kernel's OOM killer has killed in the sandbox (v2, else v1). */
static long long cgroup_oom_kills(void) {
    long long kills = cgroup_counter("memory.events", "oom_kill");
    return kills >= 0 ? kills : cgroup_counter("memory/memory.oom_control", "oom_kill");
}

/* --- tree helpers (each runs as whoever calls it) ----------------------------------------- */

enum tree_action { WIPE, OPEN_UP };

/* Under the directory open as dirfd, as its owner (the supervisor has no CAP_DAC_OVERRIDE):
 * WIPE deletes everything, opening locked directories first; OPEN_UP lets anyone read and
 * traverse everything, before root copies it. 0 on success. */
static int walk_tree(int dirfd, enum tree_action action, int depth) {
    if (depth > MAX_DEPTH) return -1;
    DIR *dir = fdopendir(dup(dirfd));
    if (!dir) return -1;
    int failed = 0;
    struct dirent *entry;
    while ((entry = readdir(dir))) {
        const char *name = entry->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        struct stat st;
        if (fstatat(dirfd, name, &st, AT_SYMLINK_NOFOLLOW)) continue;
        if (S_ISDIR(st.st_mode)) {
            fchmodat(dirfd, name, action == WIPE ? 0700 : 0755, 0);
            int child = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            if (child < 0 || walk_tree(child, action, depth + 1)) failed = 1;
            if (child >= 0) close(child);
            if (action == WIPE && unlinkat(dirfd, name, AT_REMOVEDIR)) failed = 1;
        } else if (action == WIPE) {
            if (unlinkat(dirfd, name, 0)) failed = 1;
        } else if (S_ISREG(st.st_mode)) {
            fchmodat(dirfd, name, (st.st_mode & 0111) ? 0755 : 0644, 0);
        }
    }
    closedir(dir);
    return failed ? -1 : 0;
}

/* Copy regular files, directories and symlinks from src into dst. "sealed" gives files 0444
 * (0555 when executable) and directories 0555; otherwise the copy is writable by its owner. */
static int copy_tree(int src, int dst, int sealed, int depth) {
    if (depth > MAX_DEPTH) return -1;
    DIR *dir = fdopendir(dup(src));
    if (!dir) return -1;
    struct dirent *entry;
    int failed = 0;
    while (!failed && (entry = readdir(dir))) {
        const char *name = entry->d_name;
        if (!strcmp(name, ".") || !strcmp(name, "..")) continue;
        struct stat st;
        if (fstatat(src, name, &st, AT_SYMLINK_NOFOLLOW)) {
            failed = 1;
            break;
        }
        int exec = (st.st_mode & 0111) != 0;
        if (S_ISDIR(st.st_mode)) {
            if (mkdirat(dst, name, 0700) && errno != EEXIST) failed = 1;
            int from = openat(src, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            int to = openat(dst, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
            /* An existing directory may be sealed already: open it to its owner first. */
            if (from < 0 || to < 0 || fchmod(to, 0700) || copy_tree(from, to, sealed, depth + 1))
                failed = 1;
            if (to >= 0 && fchmod(to, sealed ? 0555 : 0755)) failed = 1;
            if (from >= 0) close(from);
            if (to >= 0) close(to);
        } else if (S_ISREG(st.st_mode)) {
            int from = openat(src, name, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
            unlinkat(dst, name, 0);
            int to = openat(dst, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
            if (from < 0 || to < 0) failed = 1;
            char chunk[CHUNK];
            ssize_t n = 0;
            while (!failed && (n = read(from, chunk, sizeof chunk)) > 0)
                if (write_all(to, chunk, (size_t)n)) failed = 1;
            if (!failed && n < 0) failed = 1;
            int mode = sealed ? (exec ? 0555 : 0444) : (exec ? 0755 : 0644);
            if (to >= 0 && fchmod(to, mode)) failed = 1;
            if (from >= 0) close(from);
            if (to >= 0) close(to);
        } else if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlinkat(src, name, target, sizeof target - 1);
            if (n < 0) {
                failed = 1;
                break;
            }
            target[n] = 0;
            unlinkat(dst, name, 0);
            if (symlinkat(target, dst, name)) failed = 1;
        }
        /* FIFOs and sockets a compile step made are not carried over. */
    }
    closedir(dir);
    return failed ? -1 : 0;
}

static int open_dir(const char *path) {
    return open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
}

static void remove_ipc(const char *table, int is_shm, int is_sem) {
    FILE *f = fopen(table, "re");
    if (!f) return;
    char line[512];
    if (!fgets(line, sizeof line, f)) {
        fclose(f);
        return;
    }
    while (fgets(line, sizeof line, f)) {
        long key, id;
        if (sscanf(line, "%ld %ld", &key, &id) != 2) continue;
        if (is_shm) shmctl((int)id, IPC_RMID, NULL);
        else if (is_sem) semctl((int)id, 0, IPC_RMID);
        else msgctl((int)id, IPC_RMID, NULL);
    }
    fclose(f);
}

static void become_sandbox_user(void) {
    if (!privileged) return; /* already the only user there is */
    gid_t gid = SANDBOX_ID;
    if (setgroups(1, &gid) || setgid(SANDBOX_ID) || setuid(SANDBOX_ID)) _exit(120);
    /* With no capability left, there is no way back. */
    if (setuid(0) == 0) _exit(121);
}

/* Fork a helper that does `work` as the sandbox user; returns its exit status (0 = done). */
static int as_sandbox_user(int (*work)(void *), void *arg) {
    pid_t pid = fork();
    if (pid < 0) return -1;
    if (pid == 0) {
        become_sandbox_user();
        _exit(work(arg) ? 1 : 0);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int clean_scratch(void *unused) {
    (void)unused;
    int failed = 0;
    for (const char **path = scratch_dirs; *path; path++) {
        int fd = open_dir(*path);
        if (fd < 0) continue; /* not in this sandbox */
        if (walk_tree(fd, WIPE, 0)) failed = 1;
        close(fd);
    }
    /* Kubernetes mounts this file writable by every uid and keeps it across the steps. */
    if (truncate(TERMINATION_LOG, 0)) {
        /* Missing, or not ours to write: then no step could have written it either. */
    }
    remove_ipc("/proc/sysvipc/shm", 1, 0);
    remove_ipc("/proc/sysvipc/sem", 0, 1);
    remove_ipc("/proc/sysvipc/msg", 0, 0);
    return failed;
}

static int prepare_build(void *unused) {
    (void)unused;
    int code = open_dir(CODE_DIR), build = open_dir(BUILD_DIR);
    if (code < 0 || build < 0 || walk_tree(build, WIPE, 0)) return 1;
    /* Unprivileged, BUILD_DIR is the host's mount as it made it (a Kubernetes emptyDir belongs
     * to root, writable by all, and the host mounts it read-only for the cases): ours to fill.
     * Privileged, BUILD_DIR is root's (sticky, writable by all): the compile step works in a
     * directory of its own in it, so that root, the owner, can close BUILD_DIR afterwards. */
    if (!privileged) return copy_tree(code, build, 0, 0);
    if (mkdirat(build, BUILD_WORK_NAME, 0700)) return 1;
    int work = openat(build, BUILD_WORK_NAME, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    return work < 0 || copy_tree(code, work, 0, 0);
}

static int open_build(void *unused) {
    (void)unused;
    int work = open_dir(BUILD_WORK);
    return work < 0 || fchmod(work, 0755) || walk_tree(work, OPEN_UP, 0);
}

static int wipe_build(void *unused) {
    (void)unused;
    int build = open_dir(BUILD_DIR);
    return build < 0 || walk_tree(build, WIPE, 0);
}

/* --- running a step ------------------------------------------------------------------------ */

static int sigchld_fd = -1;

/* Kill every process in this PID namespace but ourselves and reap them all; record the main
 * child's status when it is among them. */
static void kill_everything(pid_t child, int *child_status, struct rusage *child_usage,
                            int *child_reaped, long index) {
    long long give_up = now_ms() + REAP_LIMIT_MS;
    for (;;) {
        kill(-1, SIGKILL);
        for (;;) {
            int status;
            struct rusage usage;
            pid_t pid = wait4(-1, &status, WNOHANG, &usage);
            if (pid > 0) {
                if (pid == child && !*child_reaped) {
                    *child_status = status;
                    *child_usage = usage;
                    *child_reaped = 1;
                }
                continue;
            }
            if (pid < 0 && errno == ECHILD) return; /* nobody left */
            break;
        }
        if (now_ms() > give_up) fail(index, "processes of the previous step would not die");
        usleep(200);
    }
}

static void buffer_init(struct buffer *b, long long cap) {
    b->cap = (size_t)cap;
    b->length = 0;
    b->truncated = 0;
    b->data = malloc(b->cap ? b->cap : 1);
    if (!b->data) fail(-1, "out of memory for output buffers");
}

/* Read what is available from fd into b; returns 0 at EOF, -1 when over the cap, 1 otherwise. */
static int drain(int fd, struct buffer *b) {
    char chunk[CHUNK];
    for (;;) {
        ssize_t n = read(fd, chunk, sizeof chunk);
        if (n < 0) return (errno == EAGAIN || errno == EINTR) ? 1 : 0;
        if (n == 0) return 0;
        size_t room = b->cap - b->length;
        size_t keep = (size_t)n < room ? (size_t)n : room;
        memcpy(b->data + b->length, chunk, keep);
        b->length += keep;
        if ((size_t)n > room) {
            b->truncated = 1;
            return -1;
        }
    }
}

/* Lower a limit; never above what the sandbox itself allows (we cannot raise a hard limit). */
static void set_limit(int resource, rlim_t soft, rlim_t hard) {
    struct rlimit current;
    if (getrlimit(resource, &current)) _exit(122);
    if (current.rlim_max != RLIM_INFINITY && hard > current.rlim_max) hard = current.rlim_max;
    if (soft > hard) soft = hard;
    struct rlimit limit = {soft, hard};
    if (setrlimit(resource, &limit)) _exit(122);
}

static void run_child(const struct step *s, int in, int out, int err) {
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    signal(SIGPIPE, SIG_DFL);
    if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) _exit(123);
    syscall(SYS_close_range, 3U, ~0U, 0U);
    rlim_t cpu_s = (rlim_t)((s->cpu_ms + 999) / 1000);
    set_limit(RLIMIT_CPU, cpu_s, cpu_s + 1);
    set_limit(RLIMIT_FSIZE, (rlim_t)s->file_size_bytes, (rlim_t)s->file_size_bytes);
    set_limit(RLIMIT_NOFILE, (rlim_t)s->open_files, (rlim_t)s->open_files);
    set_limit(RLIMIT_CORE, 0, 0);
    if (!s->as_root) become_sandbox_user();
    if (chdir(s->cwd)) _exit(124);
    setsid();
    execvp(s->argv[0], s->argv);
    dprintf(2, "evalplatform: cannot run %s: %s\n", s->argv[0], strerror(errno));
    _exit(127);
}

/* Run one step to its end; stdin_length bytes of our stdin are its input. */
static void run_step(const struct step *s, struct outcome *o) {
    memset(o, 0, sizeof *o);
    buffer_init(&o->out, s->output_bytes);
    buffer_init(&o->err, s->output_bytes);
    int in[2], out[2], err[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC) || pipe2(err, O_CLOEXEC))
        fail(s->index, "cannot make pipes: %s", strerror(errno));
    long long cpu_before = cgroup_cpu_usec();
    long long oom_before = cgroup_oom_kills();
    long long started = now_ms(), deadline = started + s->wall_ms;
    pid_t child = fork();
    if (child < 0) fail(s->index, "cannot fork: %s", strerror(errno));
    if (child == 0) run_child(s, in[0], out[1], err[1]);
    close(in[0]);
    close(out[1]);
    close(err[1]);
    fcntl(in[1], F_SETFL, O_NONBLOCK);
    fcntl(out[0], F_SETFL, O_NONBLOCK);
    fcntl(err[0], F_SETFL, O_NONBLOCK);

    char pending[CHUNK];
    size_t pending_length = 0, pending_start = 0;
    long long input_left = s->stdin_length;
    int stdin_open = 1, out_open = 1, err_open = 1, status = 0, reaped = 0, ended_early = 0;
    struct rusage usage = {0};
    if (!input_left) {
        close(in[1]);
        stdin_open = 0;
    }
    while (!reaped) {
        long long remaining = deadline - now_ms();
        if (remaining <= 0) {
            o->flags |= TIMED_OUT;
            ended_early = 1;
            break;
        }
        struct pollfd fds[5];
        int n = 0, at_input = -1, at_pipe = -1, at_out = -1, at_err = -1;
        fds[n] = (struct pollfd){sigchld_fd, POLLIN, 0};
        n++;
        if (input_left && pending_length == 0) {
            fds[n] = (struct pollfd){0, POLLIN, 0};
            at_input = n++;
        }
        if (stdin_open && pending_length) {
            fds[n] = (struct pollfd){in[1], POLLOUT, 0};
            at_pipe = n++;
        }
        if (out_open) {
            fds[n] = (struct pollfd){out[0], POLLIN, 0};
            at_out = n++;
        }
        if (err_open) {
            fds[n] = (struct pollfd){err[0], POLLIN, 0};
            at_err = n++;
        }
        if (poll(fds, (nfds_t)n, (int)(remaining < 1000 ? remaining : 1000)) < 0) {
            if (errno == EINTR) continue;
            fail(s->index, "poll: %s", strerror(errno));
        }
        if (fds[0].revents) {
            struct signalfd_siginfo info;
            while (read(sigchld_fd, &info, sizeof info) > 0) {
            }
        }
        if (at_input >= 0 && fds[at_input].revents) {
            size_t want = input_left < (long long)sizeof pending ? (size_t)input_left : sizeof pending;
            ssize_t got = read(0, pending, want);
            if (got <= 0) fail(s->index, "the host's stream ended inside a step's input");
            input_left -= got;
            pending_start = 0;
            pending_length = (size_t)got;
            if (!stdin_open) pending_length = 0; /* the program stopped reading: drop it */
        }
        if (at_pipe >= 0 && fds[at_pipe].revents) {
            ssize_t sent = write(in[1], pending + pending_start, pending_length);
            if (sent > 0) {
                pending_start += (size_t)sent;
                pending_length -= (size_t)sent;
            } else if (sent < 0 && errno != EAGAIN && errno != EINTR) {
                close(in[1]); /* the program closed its stdin; what it wrote still matters */
                stdin_open = 0;
                pending_length = 0;
            }
            if (stdin_open && !input_left && !pending_length) {
                close(in[1]);
                stdin_open = 0;
            }
        }
        if (at_out >= 0 && fds[at_out].revents) {
            int r = drain(out[0], &o->out);
            if (r <= 0) out_open = 0;
            if (r < 0) ended_early = 1;
        }
        if (at_err >= 0 && fds[at_err].revents) {
            int r = drain(err[0], &o->err);
            if (r <= 0) err_open = 0;
            if (r < 0) ended_early = 1;
        }
        if (ended_early) break;
        for (;;) {
            int st;
            struct rusage ru;
            pid_t pid = wait4(-1, &st, WNOHANG, &ru);
            if (pid <= 0) break;
            if (pid == child) {
                status = st;
                usage = ru;
                reaped = 1;
            }
        }
    }
    long long ended = now_ms();
    kill_everything(child, &status, &usage, &reaped, s->index);
    if (stdin_open) close(in[1]);
    /* Every writer is dead: what is left in the pipes is all there is. */
    if (out_open && drain(out[0], &o->out) < 0) ended_early = 1;
    if (err_open && drain(err[0], &o->err) < 0) ended_early = 1;
    close(out[0]);
    close(err[0]);
    /* Whatever of this step's input the program did not read is still on our stdin. */
    while (input_left > 0) {
        size_t want = input_left < (long long)sizeof pending ? (size_t)input_left : sizeof pending;
        ssize_t got = read(0, pending, want);
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0) fail(s->index, "the host's stream ended inside a step's input");
        input_left -= got;
    }

    o->wall_ms = (long)(ended - started);
    if (o->flags & TIMED_OUT) o->wall_ms = s->wall_ms > o->wall_ms ? s->wall_ms : o->wall_ms;
    if (WIFSIGNALED(status)) {
        o->signal = WTERMSIG(status);
    } else if (WIFEXITED(status)) {
        o->exited = 1;
        o->exit_code = WEXITSTATUS(status);
    }
    if (ended_early) {
        /* Past the deadline or the output cap: the status is our kill's, not the program's. */
        o->exited = 0;
        o->signal = 0;
    }
    long long cpu_after = cgroup_cpu_usec();
    long rusage_ms = (long)(usage.ru_utime.tv_sec * 1000 + usage.ru_utime.tv_usec / 1000 +
                            usage.ru_stime.tv_sec * 1000 + usage.ru_stime.tv_usec / 1000);
    o->cpu_ms = (cpu_before >= 0 && cpu_after >= cpu_before) ? (long)((cpu_after - cpu_before) / 1000)
                                                              : rusage_ms;
    if (o->cpu_ms > s->cpu_ms || o->signal == SIGXCPU) o->flags |= TIMED_OUT;
    o->peak_bytes = (long long)usage.ru_maxrss * 1024;
    long long oom_after = cgroup_oom_kills();
    /* The memory limit is the sandbox's cgroup; the resident set counts shared pages the
     * cgroup does not, so it decides nothing. */
    if (oom_before >= 0 && oom_after > oom_before) o->flags |= OUT_OF_MEMORY;
    if (o->out.truncated) o->flags |= STDOUT_TRUNCATED;
    if (o->err.truncated) o->flags |= STDERR_TRUNCATED;
    if (as_sandbox_user(clean_scratch, NULL)) fail(s->index, "could not empty scratch");
}

/* --- the session ---------------------------------------------------------------------------- */

/* Make what the compile step left the read-only code of every case: copied by root, it
 * belongs to root, so the sandbox user can read it and nothing more. */
static void keep_build(long index) {
    if (as_sandbox_user(open_build, NULL)) fail(index, "could not open up the build directory");
    int code = open_dir(CODE_DIR), work = open_dir(BUILD_WORK);
    if (code < 0 || work < 0 || fchmod(code, 0755))
        fail(index, "could not open the code directory: %s", strerror(errno));
    if (copy_tree(work, code, 1, 0) || fchmod(code, 0555))
        fail(index, "could not copy what the compile step made: %s", strerror(errno));
    close(code);
    close(work);
    if (as_sandbox_user(wipe_build, NULL)) fail(index, "could not empty the build directory");
    /* Closed for good: BUILD_DIR is a writable, executable mount, and nothing a case leaves
     * may reach the next case. Root owns it, so no case can open it again. */
    int build = open_dir(BUILD_DIR);
    if (build < 0 || fchmod(build, 0555))
        fail(index, "could not close the build directory: %s", strerror(errno));
    close(build);
}

static long long parse_number(const char *text, const char *what, long index) {
    char *end;
    errno = 0;
    long long value = strtoll(text, &end, 10);
    if (errno || end == text || *end || value < 0) fail(index, "bad %s in a header", what);
    return value;
}

static void read_step(const char *line, struct step *s) {
    char *copy = strdup(line), *fields[10], *save = NULL;
    int count = 0;
    for (char *f = strtok_r(copy + 1, " ", &save); f && count < 10; f = strtok_r(NULL, " ", &save))
        fields[count++] = f;
    if (count != 9 || line[1] != ' ') fail(-1, "a step header needs nine numbers");
    s->kind = line[0];
    s->index = (long)parse_number(fields[0], "index", -1);
    s->wall_ms = (long)parse_number(fields[1], "wall time", s->index);
    s->cpu_ms = (long)parse_number(fields[2], "cpu time", s->index);
    s->memory_bytes = parse_number(fields[3], "memory", s->index);
    s->output_bytes = parse_number(fields[4], "output", s->index);
    s->file_size_bytes = parse_number(fields[5], "file size", s->index);
    s->open_files = (long)parse_number(fields[6], "open files", s->index);
    long long argv_length = parse_number(fields[7], "argv length", s->index);
    s->stdin_length = parse_number(fields[8], "stdin length", s->index);
    free(copy);
    if (s->wall_ms < 1 || s->cpu_ms < 1 || s->open_files < 3 || argv_length < 2 ||
        argv_length > MAX_ARGV_BYTES)
        fail(s->index, "a step's limits or command are out of range");
    if (read_exact(0, s->argv_bytes, (size_t)argv_length)) fail(s->index, "input ended in argv");
    if (s->argv_bytes[argv_length - 1]) fail(s->index, "argv must end with a NUL");
    int argc = 0;
    for (long long i = 0; i < argv_length; i += (long long)strlen(s->argv_bytes + i) + 1) {
        if (argc == MAX_ARGS) fail(s->index, "too many arguments");
        s->argv[argc++] = s->argv_bytes + i;
    }
    s->argv[argc] = NULL;
    if (!s->argv[0][0]) fail(s->index, "the command is empty");
}

/* Make the directories of the archive path `name` under `dirfd` and return its last
 * component's directory (or -1), leaving *last at that component. */
static int parent_of(int dirfd, char *name, char **last) {
    int dir = dup(dirfd);
    char *part = name;
    for (int depth = 0; dir >= 0; depth++) {
        char *slash = strchr(part, '/');
        size_t length = slash ? (size_t)(slash - part) : strlen(part);
        if (!length || (length == 1 && part[0] == '.') ||
            (length == 2 && part[0] == '.' && part[1] == '.') || depth >= MAX_DEPTH) {
            close(dir);
            return -1;
        }
        if (!slash) {
            *last = part;
            return dir;
        }
        *slash = 0;
        if (mkdirat(dir, part, 0755) && errno != EEXIST) {
            close(dir);
            return -1;
        }
        int next = openat(dir, part, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
        close(dir);
        dir = next;
        *slash = '/';
        part = slash + 1;
    }
    return -1;
}

/* The code: "<name_length> <size>\n" <name> <data>, per file, for `length` bytes in all.
 * Root writes it, directories 0755 and files 0444, so the program (another uid) may only
 * read it. A name is a relative path of components other than "", "." and "..", and names
 * no file twice: anything else ends the session. */
static void unpack(long long length) {
    if (!length) return;
    umask(022);
    /* The engine may give a tmpfs the image's mode for its path. */
    if (chmod(CODE_DIR, 0755)) fail(-1, "cannot prepare %s: %s", CODE_DIR, strerror(errno));
    int code = open(CODE_DIR, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (code < 0) fail(-1, "cannot open %s: %s", CODE_DIR, strerror(errno));
    static char name[PATH_MAX], data[CHUNK];
    char line[MAX_LINE], *size_text;
    while (length > 0) {
        if (read_line(line, sizeof line) != 1 || !(size_text = strchr(line, ' ')))
            fail(-1, "the code archive needs a \"<name length> <size>\" line per file");
        length -= (long long)strlen(line) + 1;
        *size_text++ = 0;
        long long name_length = parse_number(line, "file name length", -1);
        long long size = parse_number(size_text, "file size", -1);
        if (name_length < 1 || name_length >= PATH_MAX) fail(-1, "a file name's length is out of range");
        length -= name_length + size;
        if (length < 0) fail(-1, "a file runs past the end of the code archive");
        if (read_exact(0, name, (size_t)name_length)) fail(-1, "the code archive ended early");
        name[name_length] = 0;
        char *last = NULL;
        int dir = strlen(name) == (size_t)name_length ? parent_of(code, name, &last) : -1;
        int file = dir < 0 ? -1
                           : openat(dir, last, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0444);
        if (file < 0) fail(-1, "cannot unpack the file %s: %s", name, dir < 0 ? "unsafe name" : strerror(errno));
        close(dir);
        while (size > 0) {
            size_t want = size < (long long)sizeof data ? (size_t)size : sizeof data;
            if (read_exact(0, data, want)) fail(-1, "the code archive ended early");
            if (write_all(file, data, want)) fail(-1, "cannot write the file %s: %s", name, strerror(errno));
            size -= (long long)want;
        }
        close(file);
    }
    close(code);
}

int main(int argc, char **argv) {
    privileged = geteuid() == 0;
    /* Our own copy is root's alone, whatever mode the engine gave its directory. */
    if (privileged && chmod(BIN_DIR, 0700) && errno != ENOENT)
        fail(-1, "cannot prepare %s: %s", BIN_DIR, strerror(errno));
    /* Not dumpable: no process of another uid, nor of ours, may ptrace us or open our /proc
     * files (our descriptors among them). A subreaper, should we not be PID 1: orphaned
     * processes of a step come to us, so we can reap them all. */
    prctl(PR_SET_DUMPABLE, 0);
    prctl(PR_SET_CHILD_SUBREAPER, 1);
    if (argc > 1) {
        int input = open(argv[1], O_RDONLY | O_CLOEXEC);
        if (input < 0 || dup2(input, 0) < 0) fail(-1, "cannot read %s: %s", argv[1], strerror(errno));
        if (input != 0) close(input);
    }
    signal(SIGPIPE, SIG_IGN);
    sigset_t chld;
    sigemptyset(&chld);
    sigaddset(&chld, SIGCHLD);
    sigprocmask(SIG_BLOCK, &chld, NULL);
    sigchld_fd = signalfd(-1, &chld, SFD_NONBLOCK | SFD_CLOEXEC);
    if (sigchld_fd < 0) fail(-1, "signalfd: %s", strerror(errno));
    /* Nothing any step does may reach our own stdout or stderr except through a record. */
    fcntl(1, F_SETFD, FD_CLOEXEC);
    fcntl(2, F_SETFD, FD_CLOEXEC);

    char line[MAX_LINE];
    if (read_line(line, sizeof line) != 1 || strncmp(line, "EVALPLATFORM-SESSION 1 ", 23))
        fail(-1, "the stream does not start a session");
    size_t nonce_length = strlen(line + 23);
    if (nonce_length < 1 || nonce_length > 64 || strspn(line + 23, "0123456789abcdef") != nonce_length)
        fail(-1, "bad nonce");
    memcpy(nonce, line + 23, nonce_length + 1);
    if (read_line(line, sizeof line) != 1 || line[0] != 'A' || line[1] != ' ')
        fail(-1, "the code archive must come first");
    unpack(parse_number(line + 2, "archive length", -1));

    static struct step s;
    struct outcome o;
    int compile_failed = 0;
    for (;;) {
        int got = read_line(line, sizeof line);
        if (got == 0 || (got == 1 && !strcmp(line, "Q"))) return compile_failed;
        if (got < 0 || (line[0] != 'K' && line[0] != 'C')) fail(-1, "unknown record");
        memset(&s, 0, sizeof s);
        read_step(line, &s);
        if (s.kind == 'K') {
            if (as_sandbox_user(prepare_build, NULL)) fail(s.index, "could not copy the code");
            s.cwd = privileged ? BUILD_WORK : BUILD_DIR;
        } else {
            s.cwd = CODE_DIR;
        }
        run_step(&s, &o);
        if (s.kind == 'K' && privileged) keep_build(s.index);
        if (s.kind == 'K' && (!o.exited || o.exit_code || o.flags)) compile_failed = 1;
        emit('R', s.index, &o, o.out.data, o.out.length, o.err.data, o.err.length);
        free(o.out.data);
        free(o.err.data);
    }
}
