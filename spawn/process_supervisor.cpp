#include "spawn/process_supervisor.hpp"

#include "spawn/child_setup.hpp"

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/process/v2/posix/default_launcher.hpp>
#include <boost/process/v2/process.hpp>

#include <atomic>
#include <csignal>
#include <cstring>
#include <thread>
#include <unordered_map>
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
        bp::posix::default_launcher launcher;
        bp::error_code ec;
        std::vector<std::string> no_args; // the child execs its own argv
        Process proc = launcher(ctx.get_executor(), ec, spec.path, no_args, setup);
        // The child has its copies; the parent's ends are of no further use.
        if (spec.activation_fd >= 0) ::close(spec.activation_fd);
        if (spec.output_fd >= 0) ::close(spec.output_fd);
        if (ec) {
            // The child wrote its errno and _exit()ed: reap it here, at once
            // (Boost.Process leaves it a zombie).
            if (launcher.pid > 0) {
                int status = 0;
                while (::waitpid(launcher.pid, &status, 0) < 0 && errno == EINTR) {
                }
            }
            done(tag, 0, std::error_code(ec.value(), std::system_category()));
            return;
        }
        int pid = proc.id();
        auto owned = std::make_unique<Process>(std::move(proc));
        Process& p = *owned;
        children.emplace(tag, std::move(owned));
        ++running;
        p.async_wait([this, tag, pid](bp::error_code, int) { reaped(tag, pid); });
        done(tag, pid, {});
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
