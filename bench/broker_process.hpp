#pragma once
// foreman as the operator runs it: build/bin/foreman in its own process, with
// a generated configuration in a scratch folder, so that its CPU time and
// memory can be read from /proc and nothing of the load generator's is
// counted as the broker's.

#include <chrono>
#include <string>
#include <sys/types.h>

namespace foreman::bench {

/// The folder of the running executable (build/bin), where foreman,
/// foreman-echo and foremanctl are.
std::string bin_dir();

/// A fresh scratch folder under /tmp, removed with its content at the end.
class ScratchDir {
public:
    ScratchDir();
    ~ScratchDir();
    ScratchDir(const ScratchDir&) = delete;
    ScratchDir& operator=(const ScratchDir&) = delete;
    const std::string& path() const { return path_; }

private:
    std::string path_;
};

class BrokerProcess {
public:
    /// Writes `config` (INI; runtime_dir is set to <dir>/run unless given)
    /// to <dir>/foreman.conf, starts foreman with it (stderr to <dir>/foreman.log)
    /// and returns once its control socket accepts connections.
    /// Throws std::runtime_error when it exits or does not come up in 10 s.
    BrokerProcess(const std::string& dir, std::string config);
    /// SIGTERM, then waits for it to exit.
    ~BrokerProcess();
    BrokerProcess(const BrokerProcess&) = delete;
    BrokerProcess& operator=(const BrokerProcess&) = delete;

    pid_t pid() const { return pid_; }
    const std::string& socket() const { return socket_; }
    const std::string& log_path() const { return log_; }
    /// User + system CPU time it has used so far.
    std::chrono::nanoseconds cpu_time() const;
    /// Resident memory (VmRSS).
    std::size_t rss_bytes() const;
    /// Stops it (SIGTERM) and returns its exit status (waitpid's).
    int stop();

private:
    pid_t pid_ = -1;
    std::string socket_;
    std::string log_;
};

} // namespace foreman::bench
