/*
 * The C API (client/foreman.h) used from C11, as a mail server would use it.
 * tests/c_api/c_api_test.cpp runs it against a real broker (or against the
 * fake brokers below) and checks its exit status and output.
 *
 * usage: foreman_c_test SCENARIO ARG
 *   lease SOCKET     lease echo, echo bytes, renew, release, and the FAILs
 *   busy SOCKET      a pool of one worker: a second lease with wait_ms=0
 *   expired SOCKET   a lease not renewed: its EXPIRED event
 *   detach SOCKET    a detached lease renewed and released from a new connection
 *   default -        connect(NULL): $FOREMAN_SOCKET
 *   missing PATH     connect to a socket that does not exist
 *   fake DIR         brokers that hang up, send garbage, speak another
 *                    version, or refuse with FAIL *
 * Prints "ok: ..." per check and "not ok: ..." per failed one; exit status 0
 * when every check passed, 1 otherwise, 2 on bad usage.
 */
#define _POSIX_C_SOURCE 200809L

#include "client/foreman.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int failures;

static void check(int ok, const char *what, const char *detail) {
    if (ok) {
        printf("ok: %s\n", what);
    } else {
        printf("not ok: %s%s%s\n", what, detail && *detail ? ": " : "", detail ? detail : "");
        failures++;
    }
    fflush(stdout);
}

/* Checks that a call returned `want`, naming what it returned instead. */
static void check_rc(foreman_error rc, foreman_error want, const char *what, const foreman_conn *c) {
    char detail[512];
    snprintf(detail, sizeof detail, "returned %d (%s), %s", (int)rc, foreman_strerror(rc), foreman_last_error(c));
    check(rc == want, what, detail);
}

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Writes `text` to the worker and reads as many bytes back (10 s at most). */
static int echoes(int fd, const char *text) {
    size_t len = strlen(text), got = 0;
    char buf[256];
    int64_t deadline = now_ms() + 10000;
    if (len > sizeof buf || write(fd, text, len) != (ssize_t)len) return 0;
    while (got < len) {
        struct pollfd p = {fd, POLLIN, 0};
        int64_t left = deadline - now_ms();
        ssize_t n;
        if (left <= 0 || poll(&p, 1, (int)left) <= 0) return 0;
        n = read(fd, buf + got, len - got);
        if (n <= 0) return 0;
        got += (size_t)n;
    }
    return memcmp(buf, text, len) == 0;
}

/* Descriptors this process has open. */
static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (!d) return -1;
    while (readdir(d)) n++;
    closedir(d);
    return n;
}

static foreman_conn *connect_or_die(const char *path) {
    foreman_conn *c = NULL;
    foreman_error rc = foreman_connect(path, &c);
    check_rc(rc, FOREMAN_OK, "connect", c);
    if (rc != FOREMAN_OK) {
        foreman_close(c);
        exit(1);
    }
    return c;
}

static void scenario_lease(const char *socket_path) {
    int fds_before = count_fds();
    foreman_conn *c = connect_or_die(socket_path);
    foreman_grant g;
    uint64_t ttl = 0;
    foreman_error rc;

    check(foreman_fd(c) >= 0, "the control socket is open", NULL);
    rc = foreman_lease(c, "echo", "alice", 5000, FOREMAN_WAIT_DEFAULT, 0, &g);
    check_rc(rc, FOREMAN_OK, "lease echo", c);
    if (rc != FOREMAN_OK) exit(1);
    printf("lease %" PRIu64 " worker %ld ttl %" PRIu64 "\n", g.lease_id, (long)g.worker_pid, g.ttl_ms);
    check(g.fd >= 0 && g.lease_id > 0 && g.worker_pid > 0, "the grant has a descriptor, an id and a pid", NULL);
    check(g.ttl_ms == 5000, "the grant has the ttl asked for", NULL);
    check(*foreman_last_error(c) == '\0', "no error after a success", foreman_last_error(c));
    check(echoes(g.fd, "hello foreman\n"), "bytes echo through the worker connection", NULL);

    rc = foreman_renew(c, g.lease_id, &ttl);
    check_rc(rc, FOREMAN_OK, "renew", c);
    check(ttl == 5000, "renew gives the ttl", NULL);
    check_rc(foreman_renew(c, g.lease_id, NULL), FOREMAN_OK, "renew without asking the ttl", c);
    check_rc(foreman_release(c, g.lease_id), FOREMAN_OK, "release", c);
    check(echoes(g.fd, "still mine\n"), "the descriptor stays open after release (the caller closes it)", NULL);
    close(g.fd);

    rc = foreman_release(c, g.lease_id);
    check_rc(rc, FOREMAN_ERR_NO_SUCH_LEASE, "release of an ended lease: no-such-lease", c);
    printf("no-such-lease error: %s\n", foreman_last_error(c));
    printf("no-such-lease text: %s\n", foreman_fail_text(c));
    check(*foreman_fail_text(c) != '\0', "no-such-lease comes with the broker's text", NULL);
    check_rc(foreman_release(c, 999999999), FOREMAN_ERR_NO_SUCH_LEASE, "release of an unknown lease: no-such-lease", c);
    check_rc(foreman_renew(c, 999999999, &ttl), FOREMAN_ERR_NO_SUCH_LEASE, "renew of an unknown lease: no-such-lease", c);

    rc = foreman_lease(c, "nosuch", NULL, 0, FOREMAN_WAIT_DEFAULT, 0, &g);
    check_rc(rc, FOREMAN_ERR_UNKNOWN_PROTOCOL, "lease of an unknown protocol: unknown-protocol", c);
    check(g.fd == -1, "a failed lease gives no descriptor", NULL);
    printf("unknown-protocol error: %s\n", foreman_last_error(c));
    printf("unknown-protocol text: %s\n", foreman_fail_text(c));
    check(strstr(foreman_fail_text(c), "nosuch") != NULL, "the broker's text names the protocol", foreman_fail_text(c));
    check(strstr(foreman_last_error(c), "unknown-protocol") != NULL, "the error names the code", NULL);

    rc = foreman_lease(c, "echo", NULL, 1, FOREMAN_WAIT_DEFAULT, 0, &g);
    check_rc(rc, FOREMAN_ERR_BAD_REQUEST, "a ttl below 100 ms: bad-request", c);
    rc = foreman_lease(c, "echo", "tab\there", 0, FOREMAN_WAIT_DEFAULT, 0, &g);
    check_rc(rc, FOREMAN_ERR_INVALID, "a user holding a tab is refused before sending", c);
    check(*foreman_fail_text(c) == '\0', "a local error has no FAIL text", NULL);
    check_rc(foreman_lease(c, NULL, NULL, 0, 0, 0, &g), FOREMAN_ERR_INVALID, "a NULL protocol", c);
    check_rc(foreman_lease(c, "echo", NULL, 0, 0, 0, NULL), FOREMAN_ERR_INVALID, "a NULL grant", c);

    /* The connection goes on after every error above. */
    rc = foreman_lease(c, "echo", NULL, 0, FOREMAN_WAIT_DEFAULT, 0, &g);
    check_rc(rc, FOREMAN_OK, "lease again after the errors", c);
    if (rc == FOREMAN_OK) {
        check(echoes(g.fd, "again\n"), "the second lease echoes", NULL);
        check_rc(foreman_release(c, g.lease_id), FOREMAN_OK, "release the second lease", c);
        close(g.fd);
    }
    foreman_close(c);
    check(count_fds() == fds_before, "every descriptor is closed after foreman_close", NULL);
}

static void scenario_busy(const char *socket_path) {
    foreman_conn *c = connect_or_die(socket_path);
    foreman_grant a, b;
    foreman_error rc = foreman_lease(c, "echo", NULL, 0, FOREMAN_WAIT_DEFAULT, 0, &a);
    check_rc(rc, FOREMAN_OK, "lease the only worker", c);
    if (rc != FOREMAN_OK) exit(1);
    rc = foreman_lease(c, "echo", NULL, 0, 0, 0, &b);
    check_rc(rc, FOREMAN_ERR_BUSY, "a second lease with wait_ms=0: busy", c);
    printf("busy text: %s\n", foreman_fail_text(c));
    check_rc(foreman_release(c, a.lease_id), FOREMAN_OK, "release the first", c);
    close(a.fd);
    rc = foreman_lease(c, "echo", NULL, 0, 0, 0, &b);
    check_rc(rc, FOREMAN_OK, "with the worker free, wait_ms=0 is granted", c);
    if (rc == FOREMAN_OK) {
        check(b.worker_pid == a.worker_pid, "the same worker serves again", NULL);
        close(b.fd);
    }
    foreman_close(c); /* ends the second lease: not detached */
}

static void scenario_expired(const char *socket_path) {
    foreman_conn *c = connect_or_die(socket_path);
    foreman_grant g;
    foreman_expired e;
    int64_t deadline = now_ms() + 20000;
    int got = 0;
    foreman_error rc = foreman_lease(c, "echo", NULL, 100, FOREMAN_WAIT_DEFAULT, 0, &g);
    check_rc(rc, FOREMAN_OK, "lease with ttl 100 ms", c);
    if (rc != FOREMAN_OK) exit(1);
    check(foreman_take_expired(c, &e) == 0, "no EXPIRED event yet", NULL);
    /* Wait for the event the way an event loop would: poll(2) on the
     * control socket, then foreman_poll(c, 0). */
    while (!got && now_ms() < deadline) {
        struct pollfd p = {foreman_fd(c), POLLIN, 0};
        if (poll(&p, 1, (int)(deadline - now_ms())) <= 0) break;
        rc = foreman_poll(c, 0);
        if (rc != FOREMAN_OK) break;
        got = foreman_take_expired(c, &e);
    }
    check_rc(rc, FOREMAN_OK, "poll reads the broker's lines", c);
    check(got == 1, "the lease's EXPIRED event arrives", NULL);
    if (got) {
        printf("expired %" PRIu64 " %s\n", e.lease_id, foreman_expiry_name(e.reason));
        check(e.lease_id == g.lease_id, "it names the lease", NULL);
        check(e.reason == FOREMAN_EXPIRED_TTL, "its reason is ttl", foreman_expiry_name(e.reason));
    }
    check(foreman_take_expired(c, &e) == 0, "each event is taken once", NULL);
    check_rc(foreman_renew(c, g.lease_id, NULL), FOREMAN_ERR_NO_SUCH_LEASE, "renew after expiry: no-such-lease", c);
    check_rc(foreman_poll(c, 1), FOREMAN_OK, "poll with nothing to read times out quietly", c);
    close(g.fd);
    foreman_close(c);
}

static void scenario_detach(const char *socket_path) {
    foreman_conn *c = connect_or_die(socket_path);
    foreman_grant g;
    uint64_t ttl = 0;
    foreman_error rc = foreman_lease(c, "echo", NULL, 0, FOREMAN_WAIT_DEFAULT, 1, &g);
    check_rc(rc, FOREMAN_OK, "lease with detach", c);
    if (rc != FOREMAN_OK) exit(1);
    foreman_close(c);
    check(echoes(g.fd, "detached\n"), "the worker still answers after its connection closed", NULL);
    c = connect_or_die(socket_path);
    check_rc(foreman_renew(c, g.lease_id, &ttl), FOREMAN_OK, "renew from another connection", c);
    check_rc(foreman_release(c, g.lease_id), FOREMAN_OK, "release from another connection", c);
    printf("detached lease %" PRIu64 " released\n", g.lease_id);
    close(g.fd);
    foreman_close(c);
}

static void scenario_default(void) {
    foreman_conn *c = connect_or_die(NULL);
    foreman_grant g;
    foreman_error rc = foreman_lease(c, "echo", NULL, 0, FOREMAN_WAIT_DEFAULT, 0, &g);
    check_rc(rc, FOREMAN_OK, "lease through the default address", c);
    if (rc == FOREMAN_OK) close(g.fd);
    foreman_close(c);
}

static void scenario_missing(const char *path) {
    foreman_conn *c = NULL;
    foreman_grant g;
    foreman_error rc = foreman_connect(path, &c);
    check_rc(rc, FOREMAN_ERR_CONNECT, "connect to a missing socket: connect error", c);
    check(c != NULL, "a failed connect still gives a handle for its error", NULL);
    printf("connect error: %s\n", foreman_last_error(c));
    check(strstr(foreman_last_error(c), path) != NULL, "the error names the path", foreman_last_error(c));
    check(strstr(foreman_last_error(c), strerror(ENOENT)) != NULL, "the error says why", foreman_last_error(c));
    check(foreman_fd(c) == -1, "no control socket", NULL);
    rc = foreman_lease(c, "echo", NULL, 0, 0, 0, &g);
    check_rc(rc, FOREMAN_ERR_CONNECT, "calls on it fail the same way", c);
    check(g.fd == -1, "with no descriptor", NULL);
    foreman_close(c);
    foreman_close(NULL);
    check(foreman_connect(path, NULL) == FOREMAN_ERR_INVALID, "connect without a place for the handle", NULL);
    check(strcmp(foreman_strerror(FOREMAN_ERR_NO_SUCH_LEASE), "") != 0 &&
              strcmp(foreman_strerror(12345), "unknown foreman error") == 0,
          "foreman_strerror", NULL);
    printf("strerror(connect): %s\n", foreman_strerror(FOREMAN_ERR_CONNECT));
}

/* A fake broker at DIR/NAME.sock: it accepts one connection, reads the
 * client's VERSION line, sends `say` (NULL: nothing) and hangs up. */
static void run_fake(const char *dir, const char *name, const char *say, foreman_error want, const char *text) {
    char path[108];
    struct sockaddr_un addr;
    int listener = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    foreman_conn *c = NULL;
    foreman_error rc;
    pid_t pid;
    int status = 0;
    char what[160];

    snprintf(path, sizeof path, "%s/%s.sock", dir, name);
    memset(&addr, 0, sizeof addr);
    addr.sun_family = AF_UNIX;
    strcpy(addr.sun_path, path);
    if (listener < 0 || bind(listener, (struct sockaddr *)&addr, sizeof addr) != 0 || listen(listener, 1) != 0) {
        check(0, "fake broker listens", strerror(errno));
        return;
    }
    pid = fork();
    if (pid == 0) {
        char buf[256];
        size_t got = 0;
        int conn = accept(listener, NULL, NULL);
        /* Read the whole VERSION line first: closing with unread bytes would
         * reset the connection instead of ending it. */
        while (conn >= 0 && got < sizeof buf && (got == 0 || buf[got - 1] != '\n')) {
            ssize_t n = read(conn, buf + got, sizeof buf - got);
            if (n <= 0) break;
            got += (size_t)n;
        }
        if (conn >= 0 && say && write(conn, say, strlen(say)) < 0) _exit(1);
        _exit(0);
    }
    close(listener);
    rc = foreman_connect(path, &c);
    snprintf(what, sizeof what, "a broker that %s: %s", name, foreman_strerror(want));
    check_rc(rc, want, what, c);
    printf("%s error: %s\n", name, foreman_last_error(c));
    if (text) check(strcmp(foreman_fail_text(c), text) == 0, "the FAIL text", foreman_fail_text(c));
    foreman_close(c);
    if (pid > 0) waitpid(pid, &status, 0);
    unlink(path);
}

static void scenario_fake(const char *dir) {
    run_fake(dir, "hangs-up", NULL, FOREMAN_ERR_EOF, NULL);
    run_fake(dir, "sends-garbage", "HELLO\tthere\n", FOREMAN_ERR_PROTOCOL, NULL);
    run_fake(dir, "speaks-999", "VERSION\tforeman\t999\n", FOREMAN_ERR_VERSION, NULL);
    run_fake(dir, "is-full", "FAIL\t*\toverloaded\ttoo many clients\n", FOREMAN_ERR_OVERLOADED, "too many clients");
}

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: foreman_c_test lease|busy|expired|detach|default|missing|fake ARG\n");
        return 2;
    }
    if (strcmp(argv[1], "lease") == 0) scenario_lease(argv[2]);
    else if (strcmp(argv[1], "busy") == 0) scenario_busy(argv[2]);
    else if (strcmp(argv[1], "expired") == 0) scenario_expired(argv[2]);
    else if (strcmp(argv[1], "detach") == 0) scenario_detach(argv[2]);
    else if (strcmp(argv[1], "default") == 0) scenario_default();
    else if (strcmp(argv[1], "missing") == 0) scenario_missing(argv[2]);
    else if (strcmp(argv[1], "fake") == 0) scenario_fake(argv[2]);
    else {
        fprintf(stderr, "foreman_c_test: unknown scenario %s\n", argv[1]);
        return 2;
    }
    printf("%s\n", failures ? "FAILED" : "all passed");
    return failures ? 1 : 0;
}
