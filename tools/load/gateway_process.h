// s2smuxd (or another hop, such as haproxy) as a child process of the load
// tool: a generated configuration in a temporary directory, fork/exec,
// readiness by connecting to its listener, liveness by waitpid(WNOHANG), CPU
// and memory from /proc.
#pragma once

#include "common/result.h"

#include <sys/types.h>
#include <csignal>
#include <sys/wait.h>

#include <cstdint>
#include <string>
#include <vector>

namespace s2smux::load {

// Binds 127.0.0.1:0 and returns the port the kernel chose (then closes it,
// so there is a small window in which another process could take it).
Result<std::uint16_t> free_loopback_port();
// `n` of them.
Result<std::vector<std::uint16_t>> free_loopback_ports(std::size_t n);

struct ProcStats {
    double cpu_s = 0;         // utime + stime
    std::uint64_t rss_kb = 0; // VmRSS
    std::uint64_t hwm_kb = 0; // VmHWM (peak RSS)
};
Result<ProcStats> read_proc_stats(pid_t pid);
// utime + stime of one thread (/proc/PID/task/TID/stat); for s2smuxd, the
// thread whose TID is its PID runs the event loop, the others are libuv's
// thread pool (certificate loading, signatures, chain verification).
double read_thread_cpu_s(pid_t pid, pid_t tid);

// Busy CPU seconds of the whole machine so far (/proc/stat, all CPUs, not
// idle or iowait): minus the daemon's and the tool's own, it shows how much
// other processes competed with a run.
double machine_busy_cpu_s();

struct GatewayParams {
    std::string binary;
    std::string certs_dir; // absolute: a.test.pem/.key and ca.pem
    std::string work_dir;  // config and log go here
    std::uint16_t sink_port = 0;
};

class GatewayProcess {
public:
    GatewayProcess() = default;
    ~GatewayProcess(); // SIGKILL if still running
    GatewayProcess(const GatewayProcess&) = delete;
    GatewayProcess& operator=(const GatewayProcess&) = delete;

    // Writes the config, starts the daemon, waits (up to 10 s) until its
    // inner listener accepts connections.
    Result<void> start(const GatewayParams& p);
    // The same with a complete configuration (TOML text): writes
    // <work_dir>/<name>.toml, logs to <work_dir>/<name>.log and waits (up to
    // `timeout_ms`) until 127.0.0.1:`ready_port` accepts connections.
    Result<void> start_config(const std::string& binary, const std::string& work_dir, const std::string& name,
                              const std::string& config, std::uint16_t ready_port, int timeout_ms = 10000);
    // Any program: argv[0] is its path; stdout and stderr go to
    // <work_dir>/<name>.log.
    Result<void> start_program(const std::vector<std::string>& argv, const std::string& work_dir,
                               const std::string& name, std::uint16_t ready_port, int timeout_ms = 10000);
    // The signal terminate() sends (SIGTERM; haproxy stops gracefully on SIGUSR1).
    void set_stop_signal(int sig) { stop_signal_ = sig; }

    std::uint16_t inner_port() const { return inner_port_; }
    const std::string& name() const { return name_; }
    pid_t pid() const { return pid_; }
    bool running() const { return pid_ > 0 && !exited_; }
    // Reaps the child if it has exited; true once it has.
    bool poll_exit();
    bool exited_cleanly() const { return exited_ && WIFEXITED(status_) && WEXITSTATUS(status_) == 0; }
    std::string exit_text() const; // "exit status 1", "killed by signal 11"
    void terminate();              // the stop signal (SIGTERM)
    void kill_now();               // SIGKILL
    // Last `bytes` of the daemon's stderr log.
    std::string log_tail(std::size_t bytes = 4000) const;
    const std::string& log_path() const { return log_path_; }

private:
    pid_t pid_ = -1;
    bool exited_ = false;
    int status_ = 0;
    std::uint16_t inner_port_ = 0;
    std::string log_path_;
    std::string name_ = "s2smuxd";
    int stop_signal_ = SIGTERM;
};

// The end of a run with two gateways, after SIGTERM, called until it returns
// true: once both have exited (SIGKILL after `timeout_s`, with a note in
// `error`); then `error` (if still empty) says which one did not exit 0.
bool reap_gateways(GatewayProcess& a, GatewayProcess& b, double waited_s, double timeout_s, std::string& error);

// Waits until every admin socket in `paths` accepts a connection (a
// socket file exists between the daemon's bind() and its listen(), when a
// connection is refused). Empty, or what timed out.
std::string wait_admin_sockets(const std::vector<std::string>& paths, int timeout_ms);

// A TOML basic string: "..." with " and \\ escaped.
std::string toml_str(const std::string& s);

} // namespace s2smux::load
