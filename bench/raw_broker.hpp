#pragma once
// The raw ideal: the cheapest broker that runs the same lease cycle. It
// speaks just enough of protocol 1000 (VERSION, LEASE, RELEASE) for the same
// clients, serves each client connection on a thread of its own with
// blocking calls, and per LEASE connect()s to "its" worker socket and passes
// the descriptor. No pool, no lease table, no timers: what foreman's
// bookkeeping is measured against.

#include "spawn/unique_fd.hpp"

#include <atomic>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace foreman::bench {

class RawBroker {
public:
    /// Listens at `socket`; client connection i is served by worker socket
    /// `workers[i % workers.size()]` (one echo worker serves one connection
    /// at a time).
    RawBroker(std::string socket, std::vector<std::string> workers);
    ~RawBroker();
    RawBroker(const RawBroker&) = delete;
    RawBroker& operator=(const RawBroker&) = delete;
    const std::string& socket() const { return socket_; }

private:
    void accept_loop();
    void serve(int client, std::string worker);

    std::string socket_;
    std::vector<std::string> workers_;
    spawn::unique_fd listener_;
    std::atomic<bool> stopping_{false};
    std::mutex mu_;
    std::vector<std::thread> threads_;
    std::vector<int> clients_;
    std::thread acceptor_;
};

/// Echo workers started directly (listen=path mode of foreman-echo), for the
/// raw broker and for comparisons: fork+exec, then connect() until each
/// listens. Stopped (SIGTERM, waited for) on destruction.
class EchoWorkers {
public:
    EchoWorkers(const std::string& echo_binary, const std::string& dir, int n);
    ~EchoWorkers();
    EchoWorkers(const EchoWorkers&) = delete;
    EchoWorkers& operator=(const EchoWorkers&) = delete;
    const std::vector<std::string>& sockets() const { return sockets_; }

private:
    std::vector<int> pids_;
    std::vector<std::string> sockets_;
};

} // namespace foreman::bench
