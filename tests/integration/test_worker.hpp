#pragma once
// The integration test binary re-runs itself as a worker (libuv's habit):
// `<test binary> worker <mode>` behaves as foreman's worker contract says, or
// misbehaves on cue. Modes:
//   echo            READY=1, echo lines, READY=1 after each connection
//   never-ready     listens, never says READY=1
//   crash-at-start  exits 3 at once
//   ignore-term     as echo, but ignores SIGTERM
//   no-heartbeat    READY=1, then takes a connection and goes silent
//   exit-mid-lease  READY=1, exits 0 as soon as a connection arrives
//   grandchild      forks a child that ignores SIGTERM (its pid on stdout as
//                   "grandchild <pid>"), then as echo
//   dump FILE       writes its pid, sid, argv and environment to FILE, then as echo
//   dump-ignore-term FILE  ignores SIGTERM, then as dump FILE
//   heartbeat       as echo, and WATCHDOG=1 every WATCHDOG_USEC/4 while serving
//   close-listener  closes its listening socket, READY=1, then sleeps
//   never-accept    READY=1, then sleeps: it never accepts a connection
//   pid             READY=1, answers "pid <its pid>\n" to every read, READY=1
//                   after each connection: a test can tell which worker a
//                   descriptor reaches
//   bad-status      a STATUS= holding invalid UTF-8 and a control byte, then
//                   as echo
// And one mode that is a client, not a worker:
//   raw-client UID SOCKET LINE...  switches to uid UID (unless "-"), connects
//                   to the control socket, sends VERSION and each LINE, and
//                   prints each OK/FAIL reply line it reads (one per LINE, or
//                   until EOF or 5 s); exit 0, or 4 when it cannot connect
//   hold-client UID SOCKET LINE...  as raw-client, then keeps its connection
//                   (and so its leases) until it is killed

namespace foreman::test {

/// If argv asks for a worker mode, runs it and returns its exit status;
/// otherwise returns -1.
int run_test_worker(int argc, char** argv);

} // namespace foreman::test
