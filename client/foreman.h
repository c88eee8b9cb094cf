/*
 * foreman's C API: lease a worker connection from the broker over its
 * control socket, renew and release the lease (docs/client.md, "C API").
 *
 * Plain C11 (also valid C++). Built on the C++ client library; no exception
 * crosses this interface. Link with `pkg-config --libs foreman` (libforeman,
 * a shared library) or CMake's foreman::c.
 *
 * Conventions:
 * - Every call that can fail returns a foreman_error: FOREMAN_OK (0) or why
 *   not. foreman_last_error() then says it in words.
 * - Descriptors: the worker connection of a lease belongs to the caller, who
 *   closes it. It is close-on-exec. Closing it does not end the lease and
 *   ending the lease does not close it.
 * - Threads: a foreman_conn is used by one thread at a time (one connection
 *   per thread, or a lock around each call). Different connections are
 *   independent; foreman_strerror() and foreman_expiry_name() may be called
 *   from any thread.
 * - EXPIRED events (a lease ended other than by this connection's RELEASE)
 *   are read by whichever call is reading and queued on the connection;
 *   take them with foreman_take_expired(). foreman_poll() reads them when no
 *   request is being made.
 * - Writing to a broker that hung up never raises SIGPIPE (MSG_NOSIGNAL);
 *   writing to the worker descriptor is the caller's business.
 */
#ifndef FOREMAN_FOREMAN_H
#define FOREMAN_FOREMAN_H

#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

/* What a call returned. 1..10 are the broker's FAIL codes (PROTOCOL.md);
 * 100 and up happen on this side of the socket. */
typedef enum foreman_error {
    FOREMAN_OK = 0,
    FOREMAN_ERR_BAD_REQUEST = 1,      /* bad-request: malformed, unknown command or key */
    FOREMAN_ERR_VERSION = 2,          /* version: the broker does not speak protocol 1000 */
    FOREMAN_ERR_UNKNOWN_PROTOCOL = 3, /* unknown-protocol: no such pool */
    FOREMAN_ERR_BUSY = 4,             /* busy: waited, no worker came free */
    FOREMAN_ERR_OVERLOADED = 5,       /* overloaded: queue full, or max_clients reached */
    FOREMAN_ERR_SPAWN_FAILED = 6,     /* spawn-failed: the pool cannot start workers now */
    FOREMAN_ERR_NO_SUCH_LEASE = 7,    /* no-such-lease: unknown, ended, or not yours */
    FOREMAN_ERR_DENIED = 8,           /* denied: peer credentials not allowed */
    FOREMAN_ERR_EXISTS = 9,           /* exists: REGISTER of a pool that exists */
    FOREMAN_ERR_SHUTTING_DOWN = 10,   /* shutting-down: the broker is stopping */

    FOREMAN_ERR_CONNECT = 100,        /* cannot connect to the control socket */
    FOREMAN_ERR_EOF = 101,            /* the broker closed the connection */
    FOREMAN_ERR_IO = 102,             /* sending or receiving failed */
    FOREMAN_ERR_PROTOCOL = 103,       /* the broker sent something outside the contract */
    FOREMAN_ERR_INVALID = 104,        /* a bad argument (NULL, a tab or newline in a field, ...) */
    FOREMAN_ERR_NOMEM = 105,          /* out of memory */
    FOREMAN_ERR_INTERNAL = 106        /* a bug in this library */
} foreman_error;

/* Why a lease ended without our RELEASE (the reason of an EXPIRED line). */
typedef enum foreman_expiry {
    FOREMAN_EXPIRED_TTL = 0,          /* not renewed within its ttl */
    FOREMAN_EXPIRED_WORKER_READY = 1, /* the worker said it finished (notify=foreman) */
    FOREMAN_EXPIRED_WORKER_EXIT = 2,  /* the worker died, or was killed as hung */
    FOREMAN_EXPIRED_PROCESSTIME = 3,  /* the lease outlived max_processtime_secs */
    FOREMAN_EXPIRED_SHUTDOWN = 4      /* the broker is stopping */
} foreman_expiry;

/* A granted lease. */
typedef struct foreman_grant {
    int fd;            /* connected stream socket to the worker: the caller's to close */
    uint64_t lease_id; /* also a fencing token: strictly increasing */
    pid_t worker_pid;
    uint64_t ttl_ms;   /* renew before this runs out */
} foreman_grant;

typedef struct foreman_expired {
    uint64_t lease_id;
    foreman_expiry reason;
} foreman_expired;

/* A control connection (opaque). */
typedef struct foreman_conn foreman_conn;

/* foreman_lease()'s wait_ms for "the pool's queue_timeout_ms". */
#define FOREMAN_WAIT_DEFAULT (-1)

/* Connects to the broker's control socket and does the VERSION handshake.
 * `socket_path` NULL or "": $FOREMAN_SOCKET, else the broker's default
 * (<runtime_dir>/foreman.sock), as foremanctl finds it.
 * *conn is set even when this fails (so foreman_last_error() can say why),
 * to NULL only when out of memory: call foreman_close(*conn) either way.
 * Errors: CONNECT, EOF, IO, PROTOCOL, VERSION, OVERLOADED (max_clients),
 * INVALID (conn NULL), NOMEM. */
foreman_error foreman_connect(const char *socket_path, foreman_conn **conn);

/* Closes the control connection and frees `conn` (NULL: nothing). Leases it
 * holds end, except detached ones; lease descriptors stay open. */
void foreman_close(foreman_conn *conn);

/* LEASE: waits for a worker of pool `protocol`.
 * user:    NULL or "": not sent (no user; per_user pools require one)
 * ttl_ms:  0: the pool's lease_ttl_ms; else 100 .. lease_ttl_ms
 * wait_ms: FOREMAN_WAIT_DEFAULT (or any negative): the pool's
 *          queue_timeout_ms; 0: fail at once with BUSY when none is free
 * detach:  nonzero: the lease outlives this connection (renew or release it
 *          from any connection of the same uid)
 * On success fills *grant (its fd is the caller's). On failure grant->fd is
 * -1 and nothing else is set. FAIL codes: UNKNOWN_PROTOCOL, BUSY,
 * OVERLOADED, SPAWN_FAILED, DENIED, BAD_REQUEST (e.g. ttl_ms out of range),
 * SHUTTING_DOWN; INVALID (protocol NULL or empty, a tab or newline in a
 * field, grant NULL) before anything is sent. */
foreman_error foreman_lease(foreman_conn *conn, const char *protocol, const char *user, uint64_t ttl_ms,
                            int64_t wait_ms, int detach, foreman_grant *grant);

/* RENEW: the lease's expiry becomes now + its ttl; *ttl_ms (if not NULL)
 * gets the ttl. NO_SUCH_LEASE when it ended or is not ours. */
foreman_error foreman_renew(foreman_conn *conn, uint64_t lease_id, uint64_t *ttl_ms);

/* RELEASE: the worker is free for others (close the descriptor too).
 * NO_SUCH_LEASE when it had ended already or is not ours. */
foreman_error foreman_release(foreman_conn *conn, uint64_t lease_id);

/* Reads whatever the broker has sent (EXPIRED events), waiting up to
 * `timeout_ms` (0: do not wait; negative: wait for something) for the first
 * byte. For event loops: poll(2) foreman_fd() for POLLIN, then call this with
 * 0. FOREMAN_OK whether or not anything arrived; EOF when the broker hung up. */
foreman_error foreman_poll(foreman_conn *conn, int timeout_ms);

/* Takes the oldest EXPIRED event read so far into *expired: 1 if there was
 * one, 0 if none (or conn NULL). Events queue until taken (at most one per
 * lease this connection held). */
int foreman_take_expired(foreman_conn *conn, foreman_expired *expired);

/* The control socket, for poll(2)/epoll: wait for POLLIN, never read it. */
int foreman_fd(const foreman_conn *conn);

/* What the last call on `conn` failed with, in words, e.g.
 * "LEASE nosuch: unknown-protocol: no pool serves protocol nosuch" or
 * "cannot connect to /run/foreman/foreman.sock: No such file or directory";
 * "" after a call that succeeded. Valid until the next call on `conn`. */
const char *foreman_last_error(const foreman_conn *conn);

/* The broker's own text of the last FAIL reply on `conn` (the 4th field of
 * the FAIL line, e.g. "no pool serves protocol nosuch"); "" when the last
 * call did not fail with a FAIL. Valid until the next call on `conn`. */
const char *foreman_fail_text(const foreman_conn *conn);

/* A constant description of `code`, e.g. "no-such-lease: the lease is
 * unknown, ended, or not yours"; "unknown foreman error" for other values. */
const char *foreman_strerror(int code);

/* The wire spelling of `reason`, e.g. "worker-exit"; "unknown" for others. */
const char *foreman_expiry_name(int reason);

#ifdef __cplusplus
}
#endif

#endif
