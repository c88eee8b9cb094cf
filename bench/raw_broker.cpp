#include "bench/raw_broker.hpp"

#include "broker/unix_socket.hpp"
#include "protocol/control_line.hpp"
#include "protocol/scm_rights.hpp"

#include <csignal>
#include <stdexcept>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

namespace foreman::bench {

RawBroker::RawBroker(std::string socket, std::vector<std::string> workers)
    : socket_(std::move(socket)), workers_(std::move(workers)), listener_(broker::listen_unix(socket_, 1024)) {
    acceptor_ = std::thread([this] { accept_loop(); });
}

RawBroker::~RawBroker() {
    stopping_ = true;
    ::shutdown(listener_.get(), SHUT_RDWR);
    acceptor_.join();
    {
        std::lock_guard lock(mu_);
        for (int c : clients_) ::shutdown(c, SHUT_RDWR);
    }
    for (auto& t : threads_) t.join();
    ::unlink(socket_.c_str());
}

void RawBroker::accept_loop() {
    std::size_t n = 0;
    while (!stopping_) {
        int c = ::accept4(listener_.get(), nullptr, nullptr, SOCK_CLOEXEC);
        if (c < 0) {
            if (errno == EINTR) continue;
            return;
        }
        std::lock_guard lock(mu_);
        clients_.push_back(c);
        threads_.emplace_back([this, c, w = workers_[n++ % workers_.size()]] { serve(c, w); });
    }
}

void RawBroker::serve(int client, std::string worker) {
    protocol::LineReader reader;
    std::string version = protocol::version_line();
    if (::write(client, version.data(), version.size()) < 0) return;
    std::uint64_t lease = 0;
    const std::string pid = std::to_string(::getpid());
    for (;;) {
        std::string_view line;
        while (reader.next(line) != protocol::LineReader::Result::line) {
            char* p = reader.prepare(4096);
            ssize_t n = ::read(client, p, 4096);
            if (n <= 0) {
                ::close(client);
                return;
            }
            reader.commit(static_cast<std::size_t>(n));
        }
        auto f = protocol::split_fields(line);
        if (f.size() < 2) continue;
        if (f[0] == "VERSION") continue; // the client's handshake line: no reply
        std::string reply;
        if (f[0] == "LEASE") {
            std::error_code ec;
            auto w = broker::connect_unix(worker, ec);
            if (!w) {
                reply = protocol::fail_line(f[1], protocol::FailCode::busy, ec.message());
            } else {
                reply = protocol::ok_line(f[1], {std::to_string(++lease), pid, "30000"});
                if (protocol::send_with_fd(client, reply, w.get()) < 0) return;
                continue;
            }
        } else if (f[0] == "RELEASE") {
            reply = protocol::ok_line(f[1]);
        } else {
            reply = protocol::fail_line(f[1], protocol::FailCode::bad_request, "raw broker");
        }
        if (::write(client, reply.data(), reply.size()) < 0) return;
    }
}

EchoWorkers::EchoWorkers(const std::string& echo_binary, const std::string& dir, int n) {
    for (int i = 0; i < n; ++i) {
        std::string path = dir + "/echo-" + std::to_string(i) + ".sock";
        pid_t pid = ::fork();
        if (pid < 0) throw std::runtime_error("fork failed");
        if (pid == 0) {
            ::setenv("FOREMAN_SOCKET", path.c_str(), 1);
            ::unsetenv("NOTIFY_SOCKET");
            ::unsetenv("LISTEN_FDS");
            ::execl(echo_binary.c_str(), echo_binary.c_str(), static_cast<char*>(nullptr));
            ::_exit(127);
        }
        pids_.push_back(pid);
        sockets_.push_back(path);
    }
    // Ready when each listens. The probe connection is accepted and closed
    // by the worker like any other.
    for (auto& path : sockets_) {
        for (int tries = 0;; ++tries) {
            std::error_code ec;
            if (broker::connect_unix(path, ec)) break;
            if (tries > 10000) throw std::runtime_error("echo worker at " + path + " did not listen");
            ::usleep(500);
        }
    }
}

EchoWorkers::~EchoWorkers() {
    for (int pid : pids_) ::kill(pid, SIGTERM);
    for (int pid : pids_) ::waitpid(pid, nullptr, 0);
}

} // namespace foreman::bench
