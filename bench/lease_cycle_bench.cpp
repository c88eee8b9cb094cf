// The warm lease cycle from one client (issue 4's figure): LEASE, receive the
// worker descriptor, one 64-byte echo, close, RELEASE — through foreman, and
// through the cheapest broker that does the same (a blocking single-threaded
// loop that connect()s to the worker socket and passes the descriptor),
// measured in the same run with the same client code and the same worker.
//
//   lease_cycle_bench [--cycles N] [--quick]

#include "bench/raw_broker.hpp"
#include "broker/broker.hpp"
#include "broker/log.hpp"
#include "broker/unix_socket.hpp"
#include "protocol/control_line.hpp"
#include "protocol/scm_rights.hpp"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <optional>
#include <string>
#include <sys/socket.h>
#include <sys/wait.h>
#include <thread>
#include <unistd.h>
#include <vector>

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
namespace fb = foreman::broker;
namespace fp = foreman::protocol;

namespace {

[[noreturn]] void die(const std::string& what) {
    std::fprintf(stderr, "lease_cycle_bench: %s: %s\n", what.c_str(), std::strerror(errno));
    std::exit(1);
}

/// A blocking line client that also collects descriptors.
class Client {
public:
    explicit Client(const std::string& path) {
        std::error_code ec;
        fd_ = fb::connect_unix(path, ec);
        if (!fd_) die("connect " + path);
        write_all(fp::version_line());
        expect_line(); // the broker's VERSION
    }

    /// One full cycle; returns false on any unexpected answer.
    bool cycle(const char* payload, std::size_t size) {
        write_all("LEASE\tl\techo\n");
        std::string ok = expect_line();
        if (ok.rfind("OK\tl\t", 0) != 0 || fds_.empty()) {
            std::fprintf(stderr, "unexpected: %s\n", ok.c_str());
            return false;
        }
        int worker = fds_.front();
        fds_.erase(fds_.begin());
        std::string id = ok.substr(5, ok.find('\t', 5) - 5);
        if (::write(worker, payload, size) != static_cast<ssize_t>(size)) die("write worker");
        char back[4096];
        std::size_t got = 0;
        while (got < size) {
            ssize_t n = ::read(worker, back + got, sizeof back - got);
            if (n <= 0) die("read worker");
            got += static_cast<std::size_t>(n);
        }
        ::close(worker);
        write_all("RELEASE\tr\t" + id + "\n");
        std::string rel = expect_line();
        return rel == "OK\tr";
    }

private:
    void write_all(const std::string& s) {
        if (::write(fd_.get(), s.data(), s.size()) != static_cast<ssize_t>(s.size())) die("write broker");
    }

    std::string expect_line() {
        std::string_view line;
        while (reader_.next(line) != fp::LineReader::Result::line) {
            char* p = reader_.prepare(4096);
            ssize_t n = fp::recv_with_fds(fd_.get(), p, 4096, fds_);
            if (n <= 0) die("read broker");
            reader_.commit(static_cast<std::size_t>(n));
        }
        return std::string(line);
    }

    foreman::spawn::unique_fd fd_;
    fp::LineReader reader_;
    std::vector<int> fds_;
};

struct Stats {
    double median_us, p99_us, per_second;
};

/// Runs `cycles` cycles on `client`, appending each one's time (us).
double run_block(Client& client, int cycles, std::vector<double>& us) {
    char payload[64];
    std::memset(payload, 'x', sizeof payload);
    auto start = Clock::now();
    for (int i = 0; i < cycles; ++i) {
        auto t0 = Clock::now();
        if (!client.cycle(payload, sizeof payload)) std::exit(1);
        us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
    }
    return std::chrono::duration<double>(Clock::now() - start).count();
}

Stats summarize(std::vector<double>& us, double seconds) {
    std::sort(us.begin(), us.end());
    return {us[us.size() / 2], us[us.size() * 99 / 100], static_cast<double>(us.size()) / seconds};
}

std::string temp_dir() {
    char tmpl[] = "/tmp/foreman-bench-XXXXXX";
    if (!::mkdtemp(tmpl)) die("mkdtemp");
    return tmpl;
}

} // namespace

int main(int argc, char** argv) {
    int cycles = 20000;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--quick") cycles = 300;
        else if (a == "--cycles" && i + 1 < argc) cycles = std::atoi(argv[++i]);
        else {
            std::fprintf(stderr, "usage: lease_cycle_bench [--cycles N] [--quick]\n");
            return 2;
        }
    }
    std::string dir = temp_dir();
    std::string echo = FOREMAN_ECHO;

    // The raw baseline (bench/raw_broker.hpp, as in foreman-bench compare):
    // one echo worker that binds its own socket (listen=path), and a broker
    // thread that blocks on the one client.
    std::optional<foreman::bench::EchoWorkers> raw_worker;
    raw_worker.emplace(echo, dir, 1);
    std::string raw_path = dir + "/raw-broker.sock";
    std::optional<foreman::bench::RawBroker> raw;
    raw.emplace(raw_path, raw_worker->sockets());

    // foreman, in-process, with the same worker binary (socket activation,
    // notify=none: ready at once, idle again at RELEASE).
    std::string conf = dir + "/foreman.conf";
    std::ofstream(conf) << "runtime_dir = " << dir << "/run\n"
                        << "[pool.echo]\npath = " << echo << "\nnotify = none\nmin_idle = 1\n";
    fb::Config config = fb::load_config(conf);
    fb::set_log_level(fb::LogLevel::warning);
    Stats base, fore;
    {
        fb::Broker broker(config, {conf, {}, false, nullptr});
        std::thread t([&] { broker.run(); });
        {
            Client raw_client(raw_path);
            Client fore_client(config.global.control_socket);
            // Blocks alternate between the two, so that whatever the machine
            // does meanwhile (this VM wakes idle vCPUs slowly and unevenly)
            // hits both alike.
            int block = std::max(50, cycles / 20);
            std::vector<double> warm;
            run_block(raw_client, block, warm);
            run_block(fore_client, block, warm);
            std::vector<double> raw_us, fore_us;
            double raw_s = 0, fore_s = 0;
            for (int done = 0; done < cycles; done += block) {
                raw_s += run_block(raw_client, block, raw_us);
                fore_s += run_block(fore_client, block, fore_us);
            }
            base = summarize(raw_us, raw_s);
            fore = summarize(fore_us, fore_s);
        }
        broker.stop();
        t.join();
    }
    raw.reset();
    raw_worker.reset();
    std::string rm = "rm -rf '" + dir + "'";
    [[maybe_unused]] int rc = std::system(rm.c_str());

    std::printf("warm lease cycle, 1 client, 64-byte echo, %d cycles\n", cycles);
    std::printf("%-28s %10s %10s %12s\n", "", "median us", "p99 us", "cycles/s");
    std::printf("%-28s %10.1f %10.1f %12.0f\n", "raw baseline (blocking)", base.median_us, base.p99_us,
                base.per_second);
    std::printf("%-28s %10.1f %10.1f %12.0f\n", "foreman", fore.median_us, fore.p99_us, fore.per_second);
    std::printf("foreman / baseline: median %.2fx, p99 %.2fx (target: median <= 1.5x)\n",
                fore.median_us / base.median_us, fore.p99_us / base.p99_us);
    return 0;
}
