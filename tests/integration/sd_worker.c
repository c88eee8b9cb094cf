/* A worker written in C against libsystemd only, as a third party would
 * write one: sd_listen_fds() for its socket, sd_notify() for READY=1 and
 * WATCHDOG=1. It echoes each connection and says READY=1 again after it. */
#define _GNU_SOURCE /* accept4 */
#include <systemd/sd-daemon.h>

#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

int main(void) {
    if (sd_listen_fds(0) != 1) {
        fprintf(stderr, "sd_worker: no activation socket\n");
        return 2;
    }
    int listener = SD_LISTEN_FDS_START;
    sd_notify(0, "READY=1\nSTATUS=waiting");
    for (;;) {
        int conn = accept4(listener, NULL, NULL, SOCK_CLOEXEC);
        if (conn < 0) return 1;
        sd_notify(0, "WATCHDOG=1\nSTATUS=serving");
        char buf[4096];
        ssize_t n;
        while ((n = read(conn, buf, sizeof buf)) > 0) {
            if (write(conn, buf, (size_t)n) != n) break;
            sd_notify(0, "WATCHDOG=1");
        }
        close(conn);
        sd_notify(0, "READY=1\nSTATUS=waiting");
    }
}
