// Uses the installed C++ client (foreman::client) and C API (foreman::c):
// leases an echo worker from the broker at argv[1], echoes a line through
// it, releases; connecting to argv[2] (no broker there) must fail. (Not
// the Asio client: its headers would double this test's compile time.)
#include <client/broker_address.hpp>
#include <foreman/client/connection.hpp> // the same header as <client/connection.hpp>
#include <foreman/foreman.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <unistd.h>

namespace fc = foreman::client;

int main(int argc, char** argv) {
    if (argc != 3) {
        std::fprintf(stderr, "usage: cxx_consumer SOCKET MISSING_SOCKET\n");
        return 2;
    }
    try {
        auto conn = fc::Connection::connect(fc::broker_address(std::string(argv[1])));
        auto lease = conn.lease("echo", {.ttl_ms = 5000});
        const std::string line = "hello from C++\n";
        if (::write(lease.fd(), line.data(), line.size()) != static_cast<ssize_t>(line.size())) return 1;
        std::string got(line.size(), '\0');
        std::size_t n = 0;
        while (n < got.size()) {
            ssize_t r = ::read(lease.fd(), got.data() + n, got.size() - n);
            if (r <= 0) return 1;
            n += static_cast<std::size_t>(r);
        }
        if (got != line) return 1;
        lease.release();
        std::printf("cxx: lease %llu echoed and released\n", static_cast<unsigned long long>(lease.id()));
    } catch (const fc::Error& e) {
        std::fprintf(stderr, "cxx_consumer: %s\n", e.what());
        return 1;
    }
    try {
        fc::Connection::connect(argv[2]);
        std::fprintf(stderr, "cxx_consumer: connected to %s\n", argv[2]);
        return 1;
    } catch (const fc::Error& e) {
        if (e.kind() != fc::Error::Kind::io) return 1;
        std::printf("cxx: %s\n", e.what());
    }
    foreman_conn* c = nullptr;
    foreman_error rc = foreman_connect(argv[2], &c);
    std::printf("cxx: C API says %s\n", foreman_strerror(rc));
    foreman_close(c);
    return rc == FOREMAN_ERR_CONNECT ? 0 : 1;
}
