/* An LD_PRELOAD shim for the journal's fault tests (tests/cli.rs): the Nth call of the process
 * to fdatasync (N from FAIL_FDATASYNC_AT) and the Nth to fsync (FAIL_FSYNC_AT) fail once with
 * EIO, without calling libc's; every other call goes to libc's (dlsym(RTLD_NEXT, ...)). Unset or
 * 0: never. When it fails a call it creates the file FAIL_SYNC_MARK names (if set), so a test can
 * wait for the failure instead of sleeping.
 *
 * Built by the test: cc -shared -fPIC -o fail_fdatasync.so fail_fdatasync.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

static atomic_long fdatasync_calls;
static atomic_long fsync_calls;

/* The call number to fail, from the environment variable `name` (0: none). */
static long nth(const char *name) {
    const char *value = getenv(name);
    return value ? atol(value) : 0;
}

/* Counts a call; returns 1 when it is the one to fail (and leaves the mark). */
static int fails(atomic_long *calls, const char *name) {
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
    if (fails(&fdatasync_calls, "FAIL_FDATASYNC_AT")) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fdatasync");
    return real(fd);
}

int fsync(int fd) {
    if (fails(&fsync_calls, "FAIL_FSYNC_AT")) {
        errno = EIO;
        return -1;
    }
    int (*real)(int) = (int (*)(int))dlsym(RTLD_NEXT, "fsync");
    return real(fd);
}
