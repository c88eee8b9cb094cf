// foreman: the broker daemon. Loads and checks its configuration, then runs
// the broker in the foreground until SIGTERM or SIGINT (SIGHUP reloads).
// Under systemd it serves the control socket foreman.socket passes, and
// reports its state and watchdog pings through sd_notify (etc/systemd/).

#include "broker/broker.hpp"
#include "broker/config.hpp"
#include "broker/log.hpp"
#include "broker/socket_activation.hpp"
#include "broker/systemd_notify.hpp"

#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/program_options.hpp>

#include <csignal>
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>
#include <cstdio>
#include <functional>
#include <iostream>
#include <optional>
#include <sstream>

namespace po = boost::program_options;
using foreman::broker::Config;
using foreman::broker::ConfigError;
using foreman::broker::PoolConfig;

namespace {

constexpr const char* foreman_version = "0.1.0";
constexpr int protocol_version = 1000;

/// Exit status of a bad command line or configuration (PROTOCOL.md).
constexpr int exit_config_error = 2;
/// Exit status of anything else that stops the broker.
constexpr int exit_failure = 1;

void log(const std::string& line) { std::cerr << "foreman: " << line << '\n' << std::flush; }

/// What main() itself reads; every other argument is a config key.
struct CommandLine {
    bool help = false;
    bool version = false;
    bool check_config = false;
    std::optional<std::string> config;
    std::vector<std::string> overrides; ///< --key=value, for load_config
};

po::options_description main_options() {
    po::options_description desc("Options");
    // clang-format off
    desc.add_options()
        ("help,h", "print this help and exit")
        ("version", "print the version and exit")
        ("check-config", "load and check the configuration, print a summary, exit 0 (2 if it is bad)")
        ("config", po::value<std::string>()->value_name("FILE"), "the configuration file (required)")
        ("log-level", po::value<std::string>()->value_name("LEVEL"),
         "debug, info (default), warning or error; debug also logs ignored notify datagrams");
    // clang-format on
    return desc;
}

/// Program_options refuses "--key=" (an empty value); "--key" "" says the same.
std::vector<std::string> arguments(int argc, char** argv) {
    std::vector<std::string> args;
    for (int i = 1; i < argc; ++i) {
        const std::string arg = argv[i];
        if (arg.starts_with("--") && arg.size() > 3 && arg.find('=') == arg.size() - 1) {
            args.push_back(arg.substr(0, arg.size() - 1));
            args.emplace_back();
        } else {
            args.push_back(arg);
        }
    }
    return args;
}

/// Program_options' complaint, without the option name (printed first).
std::string problem(const po::error& e) {
    if (const auto* syntax = dynamic_cast<const po::invalid_command_line_syntax*>(&e)) {
        if (syntax->kind() == po::invalid_syntax::missing_parameter) return "needs a value";
        if (syntax->kind() == po::invalid_syntax::extra_parameter) return "takes no value";
    }
    return e.what();
}

CommandLine parse_command_line(int argc, char** argv) {
    namespace style = po::command_line_style;
    const auto desc = main_options();
    po::parsed_options parsed(&desc);
    try {
        parsed = po::command_line_parser(arguments(argc, argv))
                     .options(desc)
                     .style(style::allow_long | style::long_allow_adjacent | style::long_allow_next |
                            style::allow_short | style::short_allow_next | style::allow_dash_for_short)
                     .allow_unregistered()
                     .run();
    } catch (const po::error_with_option_name& e) {
        throw ConfigError("", 0, e.get_option_name(), problem(e));
    } catch (const po::error& e) {
        throw ConfigError("", 0, "", e.what());
    }
    CommandLine cl;
    for (const auto& option : parsed.options) {
        if (option.unregistered || option.position_key >= 0) continue;
        if (option.string_key == "help") cl.help = true;
        else if (option.string_key == "version") cl.version = true;
        else if (option.string_key == "check-config") cl.check_config = true;
        else if (option.string_key == "log-level") {
            foreman::broker::LogLevel level;
            if (!foreman::broker::parse_log_level(option.value.front(), level))
                throw ConfigError("", 0, "--log-level", "'" + option.value.front() + "' is not debug, info, warning or error");
            foreman::broker::set_log_level(level);
        } else if (option.string_key == "config") {
            if (cl.config) throw ConfigError("", 0, "--config", "given twice");
            cl.config = option.value.front();
        }
    }
    cl.overrides = po::collect_unrecognized(parsed.options, po::include_positional);
    return cl;
}

void print_help(std::ostream& out) {
    out << "Usage: foreman --config FILE [--KEY=VALUE | --pool.NAME.KEY=VALUE]...\n"
           "       foreman --check-config --config FILE [--KEY=VALUE]...\n"
           "\n"
           "A lease-based broker of worker processes. Every key of FILE can also be given\n"
           "on the command line, which wins over the file. See docs/configuration.md.\n"
           "\n"
        << main_options() << '\n'
        << foreman::broker::global_options() << '\n'
        << foreman::broker::pool_options("NAME");
}

std::string quoted_words(const std::vector<std::string>& words) {
    std::string out;
    for (const auto& w : words) {
        if (!out.empty()) out += ' ';
        out += '\'' + w + '\'';
    }
    return out;
}

std::string describe(const PoolConfig& p) {
    const auto& l = p.limits;
    std::ostringstream out;
    out << "pool " << p.name << ": path=" << p.path;
    if (!p.args.empty()) out << " args=[" << quoted_words(p.args) << "]";
    out << " version=" << l.version << " listen=" << to_string(p.listen)
        << " notify=" << foreman::broker::notify_mode_name(l.notify) << " max_instances=" << l.max_instances
        << " min_idle=" << l.min_idle << " max_requests=" << l.max_requests
        << " lease_ttl_ms=" << l.lease_ttl.count() << " queue_timeout_ms=" << l.queue_timeout.count()
        << " max_queue=" << l.max_queue << " per_user=" << (l.per_user ? "yes" : "no");
    if (!p.run_as.empty()) out << " run_as=" << p.run_as;
    if (!p.allow_users.empty()) {
        out << " allow_users=";
        for (std::size_t i = 0; i < p.allow_users.size(); ++i) out << (i ? "," : "") << p.allow_users[i];
    }
    return out.str();
}

void log_config(const std::string& file, const Config& config) {
    const auto& g = config.global;
    std::ostringstream head;
    head << "loaded " << file << ": " << config.pools.size() << " pools, runtime_dir=" << g.runtime_dir
         << " control_socket=" << g.control_socket << " threads=" << g.threads
         << " max_workers=" << g.max_workers << " max_clients=" << g.max_clients;
    if (!g.metrics_listen.empty()) head << " metrics_listen=" << g.metrics_listen;
    log(head.str());
    for (const auto& pool : config.pools) log(describe(pool));
}

std::string summary(const std::string& file, const Config& config) {
    std::string out = file + ": ok, " + std::to_string(config.pools.size()) + " pools";
    for (std::size_t i = 0; i < config.pools.size(); ++i)
        out += (i == 0 ? ": " : ", ") + config.pools[i].name;
    return out;
}

/// What any daemon sets up before its first thread: fds 0-2 open (so that
/// no socket ever lands on them), SIGPIPE ignored (a client that hangs up
/// must not kill the broker), and as many descriptors as the hard limit
/// allows (each worker and each client connection holds some).
void prepare_process() {
    for (int fd = 0; fd < 3; ++fd)
        if (::fcntl(fd, F_GETFD) < 0) ::open("/dev/null", O_RDWR);
    std::signal(SIGPIPE, SIG_IGN);
    rlimit nofile{};
    if (::getrlimit(RLIMIT_NOFILE, &nofile) == 0 && nofile.rlim_cur < nofile.rlim_max) {
        nofile.rlim_cur = nofile.rlim_max;
        ::setrlimit(RLIMIT_NOFILE, &nofile);
    }
}

/// Serves until SIGTERM or SIGINT; SIGHUP reloads the file.
int run(const std::string& file, const std::vector<std::string>& overrides, Config config) {
    foreman::broker::BrokerOptions options{file, overrides, true, nullptr};
    options.lifecycle = foreman::broker::notify_service_manager;
    // Before the first thread starts: it unsets the LISTEN_* variables.
    options.control_listener = foreman::broker::inherited_control_socket(config.global.control_socket);
    foreman::broker::Broker broker(std::move(config), std::move(options));
    foreman::broker::Watchdog watchdog(broker.io());
    broker.run();
    return 0;
}

} // namespace

int main(int argc, char** argv) {
    try {
        const CommandLine cl = parse_command_line(argc, argv);
        if (cl.help) {
            print_help(std::cout);
            return 0;
        }
        if (cl.version) {
            std::cout << "foreman " << foreman_version << " (protocol " << protocol_version << ")\n";
            return 0;
        }
        if (!cl.config) throw ConfigError("", 0, "--config", "required (see foreman --help)");

        Config config = foreman::broker::load_config(*cl.config, cl.overrides);
        if (cl.check_config) {
            std::cout << summary(*cl.config, config) << '\n';
            return 0;
        }
        prepare_process();
        log_config(*cl.config, config);
        return run(*cl.config, cl.overrides, std::move(config));
    } catch (const ConfigError& e) {
        log(e.what());
        return exit_config_error;
    } catch (const std::exception& e) {
        log(e.what());
        return exit_failure;
    }
}
