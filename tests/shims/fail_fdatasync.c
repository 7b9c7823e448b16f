/* An LD_PRELOAD shim for the journal's fault tests (tests/cli.rs): the Nth call of the process
 * to fdatasync (N from FAIL_FDATASYNC_AT) and the Nth to fsync (FAIL_FSYNC_AT) fail once with
 * EIO, without calling libc's; every other call goes to libc's (dlsym(RTLD_NEXT, ...)). Unset or
 * 0: never. When FAIL_SYNC_PATH is set, only calls on a file or folder whose path starts with it
 * count (the audit folder, not the rest of the state folder). When it fails a call it creates the
 * file FAIL_SYNC_MARK names (if set), so a test can wait for the failure instead of sleeping.
 *
 * Built by the test: cc -shared -fPIC -o fail_fdatasync.so fail_fdatasync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static atomic_long fdatasync_calls;
static atomic_long fsync_calls;

/* The call number to fail, from the environment variable `name` (0: none). */
static long nth(const char *name) {
    const char *value = getenv(name);
    return value ? atol(value) : 0;
}

/* Whether calls on `fd` count: always without FAIL_SYNC_PATH, else when its path starts with it. */
static int counted(int fd) {
    const char *prefix = getenv("FAIL_SYNC_PATH");
    if (!prefix) {
        return 1;
    }
    char link[64], path[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t length = readlink(link, path, sizeof path - 1);
    if (length < 0) {
        return 0;
    }
    path[length] = 0;
    return strncmp(path, prefix, strlen(prefix)) == 0;
}

/* Counts a call on `fd`; returns 1 when it is the one to fail (and leaves the mark). */
static int fails(int fd, atomic_long *calls, const char *name) {
    if (!counted(fd)) {
        return 0;
    }
    long call = atomic_fetch_add(calls, 1) + 1;
    if (call != nth(name)) {
        return 0;
    }
    const char *mark = getenv("FAIL_SYNC_MARK");
    if (mark) {
        int fd = open(mark, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            close(fd);
        }
    }
    return 1;
}

int fdatasync(int fd) {
    if (fails(fd, &fdatasync_calls, "FAIL_FDATASYNC_AT")) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    if (fails(fd, &fsync_calls, "FAIL_FSYNC_AT")) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
