/* A C program built against an installed foreman with pkg-config: leases an
 * echo worker from the broker at argv[1], echoes a line through it,
 * releases; connecting to argv[2] (no broker there) must fail. */
#define _POSIX_C_SOURCE 200809L

#include <foreman/foreman.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
    const char line[] = "hello from C\n";
    char got[sizeof line] = {0};
    size_t n = 0;
    foreman_conn *c = NULL;
    foreman_grant g;
    foreman_error rc;

    if (argc != 3) {
        fprintf(stderr, "usage: c_consumer SOCKET MISSING_SOCKET\n");
        return 2;
    }
    rc = foreman_connect(argv[1], &c);
    if (rc == FOREMAN_OK) rc = foreman_lease(c, "echo", NULL, 5000, FOREMAN_WAIT_DEFAULT, 0, &g);
    if (rc != FOREMAN_OK) {
        fprintf(stderr, "c_consumer: %s\n", foreman_last_error(c));
        foreman_close(c);
        return 1;
    }
    if (write(g.fd, line, sizeof line - 1) != (ssize_t)(sizeof line - 1)) return 1;
    while (n < sizeof line - 1) {
        ssize_t r = read(g.fd, got + n, sizeof line - 1 - n);
        if (r <= 0) return 1;
        n += (size_t)r;
    }
    close(g.fd);
    if (strcmp(got, line) != 0 || foreman_release(c, g.lease_id) != FOREMAN_OK) return 1;
    printf("c: lease %" PRIu64 " echoed and released\n", g.lease_id);
    foreman_close(c);

    rc = foreman_connect(argv[2], &c);
    printf("c: %s\n", foreman_last_error(c));
    foreman_close(c);
    return rc == FOREMAN_ERR_CONNECT ? 0 : 1;
}
