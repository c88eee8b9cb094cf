#pragma once
// A control connection without the client library, for the hostile-input and
// security tests: exact bytes out (with descriptors attached when asked),
// lines and descriptors in. And the ways to be another peer: a folder any uid
// can reach, and the raw-client test worker run as another uid.

#include "broker_harness.hpp"

#include <chrono>
#include <optional>
#include <string>
#include <sys/types.h>
#include <vector>

namespace foreman::test {

inline const std::string version_line = "VERSION\tforeman\t1000";

class RawControl {
public:
    explicit RawControl(const std::string& path);

    /// Sends all of `bytes`, `fds` attached (SCM_RIGHTS) to the first byte;
    /// false when the broker closed first.
    bool send(const std::string& bytes, const std::vector<int>& fds = {});
    /// Sends VERSION and reads the broker's; false if it is not answered so.
    bool handshake();
    /// The next line without its '\n'; nullopt at end of file or after `timeout`.
    std::optional<std::string> line(std::chrono::milliseconds timeout = 10s);
    /// Whether the broker closes the connection within `timeout` with nothing
    /// more to say.
    bool closed_by_broker(std::chrono::milliseconds timeout = 10s);
    /// The descriptors received so far (with LEASE OK lines), in order.
    std::vector<spawn::unique_fd> take_fds();
    int fd() const { return fd_.get(); }

private:
    bool fill(std::chrono::steady_clock::time_point deadline);

    spawn::unique_fd fd_;
    std::string in_;
    std::vector<spawn::unique_fd> fds_;
    bool eof_ = false;
};

/// A folder anyone may enter, for a control socket another uid connects to
/// (the harness's folders are 0700, the runtime_dir 0750).
struct OpenDir {
    TempDir dir;
    OpenDir();
    std::string socket() const { return dir.path() + "/foreman.sock"; }
    /// The config lines that put the control socket there, mode 0666.
    std::string ini() const { return "control_socket = " + socket() + "\ncontrol_socket_mode = 0666\n"; }
};

inline constexpr uid_t nobody_uid = 65534;

/// The raw-client test worker mode run as `uid`: the OK/FAIL lines it read.
std::vector<std::string> run_raw_client(uid_t uid, const std::string& socket, const std::vector<std::string>& lines);

/// A connection to the unix socket at `path` whose peer credentials
/// (SO_PEERCRED, taken at connect) are uid and gid `uid`: a child drops to
/// it, connects, and passes the socket back. Needs root.
spawn::unique_fd connect_as(uid_t uid, const std::string& path);

/// The "socket:[inode]" targets among the descriptors of `pid`.
std::vector<std::string> socket_targets(int pid);

/// A pipe whose write end is passed around: once every copy of it is
/// closed, the read end sees end of file.
struct PassedPipe {
    spawn::unique_fd read_end;
    spawn::unique_fd write_end;
    PassedPipe();
    /// Closes this process's write end; true once the read end sees end of
    /// file (every copy sent away was closed) within `timeout`.
    bool all_copies_closed(std::chrono::milliseconds timeout = 10s);
};

} // namespace foreman::test
