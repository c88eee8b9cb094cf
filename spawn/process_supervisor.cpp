#include "spawn/process_supervisor.hpp"

#include "spawn/child_setup.hpp"
#include "spawn/unique_fd.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/process/v2/process.hpp>

#include <atomic>
#include <csignal>
#include <cstring>
#include <thread>
#include <unordered_map>
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

namespace foreman::spawn {

namespace asio = boost::asio;
namespace bp = boost::process::v2;

using Process = bp::basic_process<asio::io_context::executor_type>;

struct ProcessSupervisor::Impl {
    Exited on_exit;
    asio::io_context ctx{1};
    asio::executor_work_guard<asio::io_context::executor_type> work{ctx.get_executor()};
    // Touched only on the supervisor's thread.
    std::unordered_map<Tag, std::unique_ptr<Process>> children;
    std::atomic<std::size_t> running{0};
    std::thread thread;

    explicit Impl(Exited e) : on_exit(std::move(e)) {
        thread = std::thread([this] { ctx.run(); });
    }

    void start(Tag tag, LaunchSpec spec, const Started& done) {
        ChildSetup setup(spec);
        int err = 0;
        pid_t pid = fork_exec(setup, err);
        // The child has its copies; the parent's ends are of no further use.
        if (spec.activation_fd >= 0) ::close(spec.activation_fd);
        if (spec.output_fd >= 0) ::close(spec.output_fd);
        if (pid < 0) {
            done(tag, 0, std::error_code(err, std::system_category()));
            return;
        }
        // Boost.Process takes over from here: a pidfd, and waitpid of this pid
        // alone when it becomes readable.
        auto owned = std::make_unique<Process>(ctx.get_executor(), pid);
        Process& p = *owned;
        children.emplace(tag, std::move(owned));
        ++running;
        p.async_wait([this, tag, pid](bp::error_code, int) { reaped(tag, pid); });
        done(tag, pid, {});
    }

    /// fork, exec in the child, and learn whether the exec worked through a
    /// close-on-exec pipe (libuv's way): end of file means it did, an int is
    /// the child's errno. Returns the pid, or -1 with `err` set (the child,
    /// if there was one, is reaped).
    ///
    /// Not Boost.Process's launcher: between fork and exec it calls
    /// io_context::notify_fork(fork_child), which allocates and takes locks
    /// that another thread of the broker may have held at fork time; under
    /// AddressSanitizer's allocator that hung the child for good.
    static pid_t fork_exec(ChildSetup& setup, int& err) {
        int pipe_fds[2];
        if (::pipe2(pipe_fds, O_CLOEXEC) < 0) {
            err = errno;
            return -1;
        }
        spawn::unique_fd read_end(pipe_fds[0]), write_end(pipe_fds[1]);
        pid_t pid = ::fork();
        if (pid < 0) {
            err = errno;
            return -1;
        }
        if (pid == 0) setup.run_in_child(write_end.get()); // never returns
        write_end.reset();
        int child_errno = 0;
        ssize_t n;
        do n = ::read(read_end.get(), &child_errno, sizeof child_errno);
        while (n < 0 && errno == EINTR);
        if (n == 0) return pid; // exec closed the pipe: the worker runs
        err = n == static_cast<ssize_t>(sizeof child_errno) ? child_errno : EIO;
        int status = 0;
        while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
        }
        return -1;
    }

    void reaped(Tag tag, int pid) {
        auto it = children.find(tag);
        if (it == children.end()) return;
        int status = it->second->native_exit_code();
        // Drop the handle without its destructor's waitpid/kill: the pid is
        // reaped and may be reused.
        it->second->detach();
        children.erase(it);
        --running;
        // Children of the worker left in its process group die with it.
        ::kill(-pid, SIGKILL);
        on_exit(tag, pid, status);
    }

    void signal_group(Tag tag, int sig) {
        auto it = children.find(tag);
        if (it == children.end()) return; // reaped already: never signal a recycled pid
        ::kill(-it->second->id(), sig);
    }

    void kill_all_and_reap() {
        for (auto& [tag, proc] : children) {
            int pid = proc->id();
            ::kill(-pid, SIGKILL);
            int status = 0;
            while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
            }
            proc->detach();
        }
        children.clear();
        running = 0;
    }
};

ProcessSupervisor::ProcessSupervisor(Exited on_exit) : impl_(std::make_unique<Impl>(std::move(on_exit))) {}

ProcessSupervisor::~ProcessSupervisor() {
    asio::post(impl_->ctx, [m = impl_.get()] {
        m->kill_all_and_reap();
        m->work.reset();
        m->ctx.stop();
    });
    impl_->thread.join();
}

void ProcessSupervisor::start(Tag tag, LaunchSpec spec, Started done) {
    asio::post(impl_->ctx, [m = impl_.get(), tag, spec = std::move(spec), done = std::move(done)]() mutable {
        m->start(tag, std::move(spec), done);
    });
}

void ProcessSupervisor::signal_group(Tag tag, int signal) {
    asio::post(impl_->ctx, [m = impl_.get(), tag, signal] { m->signal_group(tag, signal); });
}

std::size_t ProcessSupervisor::running() const { return impl_->running.load(); }

std::string describe_wait_status(int status) {
    if (WIFEXITED(status)) return "exited with status " + std::to_string(WEXITSTATUS(status));
    if (WIFSIGNALED(status)) {
        int sig = WTERMSIG(status);
        const char* name = ::sigdescr_np(sig);
        return "killed by signal " + std::to_string(sig) + (name ? std::string(" (") + name + ")" : "");
    }
    return "ended with wait status " + std::to_string(status);
}

} // namespace foreman::spawn
