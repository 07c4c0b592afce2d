#define BOOST_TEST_MODULE test_admin
#include <boost/test/unit_test.hpp>

#include "admin/protocol.h"
#include "admin/server.h"
#include "common/log.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <thread>
#include <vector>

extern char** environ;

using namespace s2smux;
using namespace s2smux::admin;
namespace fs = std::filesystem;
using Words = std::vector<std::string>;

namespace {

struct IgnoreSigpipe {
    IgnoreSigpipe() { ::signal(SIGPIPE, SIG_IGN); } // as s2smuxd does
};

// ---------------------------------------------------------------------------
// Fake backend: records calls, answers now, later (uv timer) or when told.

struct Call {
    std::string name;
    Words args;
    bool operator==(const Call& o) const { return name == o.name && args == o.args; }
};
std::ostream& operator<<(std::ostream& os, const Call& c) {
    os << c.name;
    for (const auto& a : c.args) os << " [" << a << "]";
    return os;
}

void run_later(uv_loop_t* loop, std::uint64_t ms, std::function<void()> fn) {
    struct T {
        uv_timer_t timer{};
        std::function<void()> fn;
    };
    auto* t = new T{uv_timer_t{}, std::move(fn)};
    uv_timer_init(loop, &t->timer);
    t->timer.data = t;
    uv_timer_start(&t->timer, [](uv_timer_t* h) {
        auto* t = static_cast<T*>(h->data);
        t->fn();
        uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* h) { delete static_cast<T*>(h->data); });
    }, ms, 0);
}

struct FakeBackend : Backend {
    uv_loop_t* loop = nullptr;
    std::vector<Call> calls;
    std::map<std::string, Reply> replies;        // default: ok({"<name> reply"})
    std::map<std::string, std::uint64_t> delays; // answer after this many ms
    std::set<std::string> hold;                  // keep the Done in `held`
    std::vector<Done> held;

    void answer(std::string name, Words args, Done done) {
        calls.push_back({name, args});
        auto it = replies.find(name);
        Reply r = it != replies.end() ? it->second : Reply::ok({name + " reply"});
        if (hold.count(name)) {
            held.push_back(std::move(done));
        } else if (auto d = delays.find(name); d != delays.end()) {
            run_later(loop, d->second, [done, r] { done(r); });
        } else {
            done(r);
        }
    }
    void domains(Done d) override { answer("domains", {}, std::move(d)); }
    void certs(Done d) override { answer("certs", {}, std::move(d)); }
    void streams(Done d) override { answer("streams", {}, std::move(d)); }
    void stats(Done d) override { answer("stats", {}, std::move(d)); }
    void metrics(Done d) override { answer("metrics", {}, std::move(d)); }
    void cert_add(std::string cert, std::string key, bool replace, Done d) override {
        answer(replace ? "cert_replace" : "cert_add", {cert, key}, std::move(d));
    }
    void cert_remove(std::string domain, Done d) override { answer("cert_remove", {domain}, std::move(d)); }
    void cert_new(std::string name, Done d) override { answer("cert_new", {name}, std::move(d)); }
    void cert_set(std::string name, std::string cert, std::string key, Done d) override {
        answer("cert_set", {name, cert, key}, std::move(d));
    }
    void cert_commit(std::string name, Done d) override { answer("cert_commit", {name}, std::move(d)); }
    void cert_abort(std::string name, Done d) override { answer("cert_abort", {name}, std::move(d)); }
    void cert_show(std::string name, Done d) override { answer("cert_show", {name}, std::move(d)); }
    void reload(Done d) override { answer("reload", {}, std::move(d)); }
    void close_stream(std::string peer, std::string cond, Done d) override {
        answer("close", {peer, cond}, std::move(d));
    }
    void resolve(std::string domain, Done d) override { answer("resolve", {domain}, std::move(d)); }
    void capture_start(std::string peer, std::string file, Done d) override {
        answer("capture_start", {peer, file}, std::move(d));
    }
    void capture_stop(std::string what, Done d) override { answer("capture_stop", {what}, std::move(d)); }
    void captures(Done d) override { answer("captures", {}, std::move(d)); }
};

// Dispatches synchronously and returns the reply (or nullopt if none yet).
std::optional<Reply> call(const Dispatcher& d, FakeBackend& b, const Words& words) {
    std::optional<Reply> out;
    d.dispatch(words, b, [&out](Reply r) { out = std::move(r); });
    return out;
}

// ---------------------------------------------------------------------------
// Loop, temporary directory, socket client

bool run_until(uv_loop_t* loop, const std::function<bool()>& pred, int timeout_ms = 10000) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        uv_run(loop, UV_RUN_NOWAIT);
        if (pred()) return true;
        std::this_thread::sleep_for(std::chrono::microseconds(200));
    }
    return true;
}

struct TempDir {
    fs::path path;
    TempDir() {
        std::string tmpl = "/tmp/s2smux-admin-XXXXXX"; // short: socket paths must fit sun_path
        BOOST_REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        path = fs::canonical(tmpl);
    }
    ~TempDir() {
        std::error_code ec;
        fs::remove_all(path, ec);
    }
};

struct Client {
    int fd = -1;
    uv_loop_t* loop;
    ReplyReader reader;
    bool eof = false;

    Client(uv_loop_t* l, const std::string& path) : loop(l) {
        fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        BOOST_REQUIRE(fd >= 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, path.c_str(), sizeof sa.sun_path - 1);
        BOOST_REQUIRE_MESSAGE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0,
                              "connect " << path << ": " << std::strerror(errno));
        ::fcntl(fd, F_SETFL, ::fcntl(fd, F_GETFL) | O_NONBLOCK);
    }
    ~Client() { close(); }
    void close() {
        if (fd >= 0) ::close(fd);
        fd = -1;
    }

    void drain() {
        char buf[8192];
        while (fd >= 0 && !eof) {
            ssize_t n = ::recv(fd, buf, sizeof buf, 0);
            if (n > 0) {
                reader.feed(std::string_view(buf, static_cast<std::size_t>(n)));
            } else if (n == 0) {
                eof = true;
            } else {
                if (errno != EAGAIN && errno != EWOULDBLOCK) eof = true;
                break;
            }
        }
    }

    // Sends everything, running the loop (and reading replies) as needed.
    void send(std::string_view data) {
        std::size_t off = 0;
        auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
        while (off < data.size()) {
            ssize_t n = ::send(fd, data.data() + off, data.size() - off, MSG_NOSIGNAL);
            if (n > 0) {
                off += static_cast<std::size_t>(n);
                continue;
            }
            BOOST_REQUIRE_MESSAGE(n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK),
                                  "send: " << std::strerror(errno));
            BOOST_REQUIRE(std::chrono::steady_clock::now() < deadline);
            uv_run(loop, UV_RUN_NOWAIT);
            drain();
            std::this_thread::sleep_for(std::chrono::microseconds(100));
        }
    }

    std::optional<Reply> reply(int timeout_ms = 10000) {
        std::optional<Reply> r;
        run_until(loop, [&] {
            drain();
            r = reader.next();
            return r.has_value() || eof;
        }, timeout_ms);
        return r;
    }

    Reply command(const std::string& line) {
        send(line + "\n");
        auto r = reply();
        BOOST_REQUIRE_MESSAGE(r.has_value(), "no reply to " << line);
        return *r;
    }

    bool wait_eof(int timeout_ms = 10000) {
        return run_until(loop, [&] {
            drain();
            return eof;
        }, timeout_ms);
    }
};

// A loop, a fake backend, a temporary directory; checks that the loop closes
// cleanly (every handle freed) at the end.
struct LoopFixture {
    IgnoreSigpipe sigpipe;
    uv_loop_t loop{};
    FakeBackend backend;
    TempDir dir;
    std::string logs;
    std::string sock;

    LoopFixture() {
        uv_loop_init(&loop);
        backend.loop = &loop;
        sock = (dir.path / "admin.sock").string();
        log::capture(&logs);
    }
    ~LoopFixture() {
        log::capture(nullptr);
        if (std::getenv("ADMIN_TEST_LOGS")) std::fputs(logs.c_str(), stderr); // debugging aid
    }

    // Runs the loop until nothing is left; uv_loop_close() must succeed.
    void finish() {
        bool drained = run_until(&loop, [&] { return !uv_loop_alive(&loop); }, 10000);
        BOOST_TEST(drained);
        int rc = uv_loop_close(&loop);
        BOOST_TEST(rc == 0);
        if (rc != 0) { // leave the process in a state the next test can survive
            uv_walk(&loop, [](uv_handle_t* h, void*) {
                if (!uv_is_closing(h)) uv_close(h, nullptr);
            }, nullptr);
            uv_run(&loop, UV_RUN_DEFAULT);
            uv_loop_close(&loop);
        }
    }
};

} // namespace

BOOST_TEST_GLOBAL_FIXTURE(IgnoreSigpipe);

// ===========================================================================
BOOST_AUTO_TEST_SUITE(command_line)

BOOST_AUTO_TEST_CASE(plain_words) {
    auto r = parse_command_line("domains");
    BOOST_REQUIRE(r.ok());
    BOOST_TEST(*r == Words({"domains"}), boost::test_tools::per_element());
    r = parse_command_line("  cert \t add   a.pem  b.key  ");
    BOOST_REQUIRE(r.ok());
    BOOST_TEST(*r == Words({"cert", "add", "a.pem", "b.key"}), boost::test_tools::per_element());
    r = parse_command_line("stats\r"); // CRLF clients
    BOOST_REQUIRE(r.ok());
    BOOST_TEST(*r == Words({"stats"}), boost::test_tools::per_element());
    r = parse_command_line("cert add C:\\x y"); // backslash is literal outside quotes
    BOOST_REQUIRE(r.ok());
    BOOST_TEST(r->at(2) == "C:\\x");
}

BOOST_AUTO_TEST_CASE(quotes_and_escapes) {
    auto r = parse_command_line(R"(cert add "/etc/my certs/a.pem" "k")");
    BOOST_REQUIRE(r.ok());
    BOOST_TEST(*r == Words({"cert", "add", "/etc/my certs/a.pem", "k"}), boost::test_tools::per_element());
    r = parse_command_line(R"(x "a \"quoted\" word" "back\\slash" "")");
    BOOST_REQUIRE(r.ok());
    BOOST_TEST(*r == Words({"x", "a \"quoted\" word", "back\\slash", ""}), boost::test_tools::per_element());
    r = parse_command_line("\"\"");
    BOOST_REQUIRE(r.ok());
    BOOST_TEST(*r == Words({""}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_CASE(errors) {
    struct Case {
        std::string line, needle;
    };
    std::vector<Case> cases = {
        {R"(cert add "/a b)", "unterminated quote at column 10"},
        {R"(x "abc\)", "unterminated quote"},
        {R"(x "a\nb")", "bad escape '\\n'"},
        {R"(x ab"c")", "unexpected quote inside a word"},
        {R"(x "a"b)", "unexpected character after closing quote"},
        {std::string("x a\x01" "b"), "control character at column 4"},
        {std::string("x \"a\x7f\""), "control character"},
        {std::string("x a\0b", 5), "control character"},
    };
    for (const auto& c : cases) {
        auto r = parse_command_line(c.line);
        BOOST_TEST_CONTEXT("line " << c.line) {
            BOOST_REQUIRE(!r.ok());
            BOOST_TEST(r.error().find(c.needle) != std::string::npos, r.error());
        }
    }
}

BOOST_AUTO_TEST_CASE(empty_lines) {
    for (std::string l : {"", "   ", "\t \t", "\r"}) {
        auto r = parse_command_line(l);
        BOOST_REQUIRE(r.ok());
        BOOST_TEST(r->empty());
    }
}

BOOST_AUTO_TEST_CASE(too_long) {
    std::string max(kMaxLineBytes, 'a');
    BOOST_TEST(parse_command_line(max).ok());
    BOOST_TEST(parse_command_line(max + "\r").ok());
    auto r = parse_command_line(max + "a");
    BOOST_REQUIRE(!r.ok());
    BOOST_TEST(r.error() == "line too long (4097 bytes, at most 4096)");
}

BOOST_AUTO_TEST_CASE(quote_format_round_trip) {
    BOOST_TEST(quote_word("plain") == "plain");
    BOOST_TEST(quote_word("") == "\"\"");
    BOOST_TEST(quote_word("a b") == "\"a b\"");
    BOOST_TEST(quote_word("a\"b") == R"("a\"b")");
    BOOST_TEST(quote_word("a\\b") == R"("a\\b")");
    Words words = {"cert", "add", "/my certs/a \"x\".pem", "back\\slash", "", "\ttab", "ünïcode"};
    auto line = format_command_line(words);
    BOOST_REQUIRE(line.ok());
    auto back = parse_command_line(*line);
    BOOST_REQUIRE(back.ok());
    BOOST_TEST(*back == words, boost::test_tools::per_element());

    auto bad = format_command_line({"cert", "remove", "a\nstats"});
    BOOST_REQUIRE(!bad.ok());
    BOOST_TEST(bad.error().find("argument 3") != std::string::npos, bad.error());
    BOOST_TEST(!format_command_line({std::string(kMaxLineBytes, 'x'), "y"}).ok());
}

BOOST_AUTO_TEST_SUITE_END()

// ===========================================================================
BOOST_AUTO_TEST_SUITE(replies)

BOOST_AUTO_TEST_CASE(format) {
    BOOST_TEST(format_reply(Reply::ok()) == "OK\n");
    BOOST_TEST(format_reply(Reply::fail("no such domain")) == "ERR no such domain\n");
    BOOST_TEST(format_reply(Reply::fail("two\nlines\r")) == "ERR two lines \n");
    Reply r = Reply::ok({"plain", "OK", "ERR", "ERROR count 3", "", " indented", "OKAY", "a\nb", "x ERR"});
    BOOST_TEST(format_reply(r) == "plain\n"
                                  " OK\n"
                                  " ERR\n"
                                  " ERROR count 3\n"
                                  " \n"
                                  "  indented\n"
                                  "OKAY\n"
                                  "a\n"
                                  "b\n"
                                  "x ERR\n"
                                  "OK\n");
    Reply partial{{"done: a.test"}, "b.test: refused"};
    BOOST_TEST(format_reply(partial) == "done: a.test\nERR b.test: refused\n");
}

BOOST_AUTO_TEST_CASE(escape_functions) {
    for (std::string l : {"", "OK", "ERR", "ERR x", " x", "  ", "x", "OK x"}) {
        BOOST_TEST(unescape_data_line(escape_data_line(l)) == l);
        auto e = escape_data_line(l);
        BOOST_TEST((e != "OK" && e.rfind("ERR", 0) != 0 && !e.empty()));
    }
}

BOOST_AUTO_TEST_CASE(reader_round_trip) {
    std::vector<Reply> sent = {
        Reply::ok({"plain", "OK", "ERR x", "", " lead", "last"}),
        Reply::ok(),
        Reply::fail("usage: cert add CERT KEY"),
        Reply{{"partial", "OK"}, "something failed"},
    };
    std::string wire;
    for (const auto& r : sent) wire += format_reply(r);

    // Whole, and byte by byte.
    for (std::size_t chunk : {wire.size(), std::size_t{1}, std::size_t{7}}) {
        BOOST_TEST_CONTEXT("chunk " << chunk) {
            ReplyReader rd;
            std::vector<Reply> got;
            for (std::size_t i = 0; i < wire.size(); i += chunk) {
                rd.feed(std::string_view(wire).substr(i, chunk));
                while (auto r = rd.next()) got.push_back(std::move(*r));
            }
            BOOST_TEST(!rd.failed());
            BOOST_TEST(rd.idle());
            BOOST_REQUIRE(got.size() == sent.size());
            for (std::size_t i = 0; i < sent.size(); ++i) {
                BOOST_TEST(got[i].lines == sent[i].lines, boost::test_tools::per_element());
                BOOST_TEST(got[i].error == sent[i].error);
            }
        }
    }
}

BOOST_AUTO_TEST_CASE(reader_edge_cases) {
    ReplyReader rd;
    rd.feed("data");
    BOOST_TEST(!rd.next().has_value());
    BOOST_TEST(!rd.idle());
    rd.feed("\nERR\n");
    auto r = rd.next();
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->lines == Words({"data"}), boost::test_tools::per_element());
    BOOST_TEST(r->error == "unspecified error");
    BOOST_TEST(rd.idle());

    ReplyReader small(16);
    small.feed(std::string(17, 'x'));
    BOOST_TEST(small.failed());
    ReplyReader small2(16);
    small2.feed(std::string(20, 'x') + "\nOK\n");
    BOOST_TEST(small2.failed());
    BOOST_TEST(!small2.next().has_value());
}

BOOST_AUTO_TEST_CASE(table) {
    Table t({"PEER", "DIR", {"STANZAS", Table::Right}, "TLS"});
    t.add({"b.test", "out", "120", "TLS1.3"});
    t.add({"muc.example.org", "in", "7", ""});
    t.add({"c.test"}); // missing cells
    BOOST_TEST(t.rows() == 3u);
    Words want = {
        "PEER             DIR  STANZAS  TLS",
        "b.test           out      120  TLS1.3",
        "muc.example.org  in         7  -",
        "c.test           -          -  -",
    };
    BOOST_TEST(t.render() == want, boost::test_tools::per_element());

    Table kv({"", {"", Table::Right}});
    kv.add({"stanzas_routed", "12"}).add({"bytes_in", "123456"});
    Words want_kv = {"stanzas_routed      12", "bytes_in        123456"};
    BOOST_TEST(kv.render() == want_kv, boost::test_tools::per_element());

    Table empty({"PEER", "DIR"});
    BOOST_TEST(empty.render() == Words({"PEER  DIR"}), boost::test_tools::per_element());
}

BOOST_AUTO_TEST_SUITE_END()

// ===========================================================================
BOOST_AUTO_TEST_SUITE(dispatcher)

BOOST_AUTO_TEST_CASE(unknown_and_incomplete) {
    Dispatcher d;
    FakeBackend b;
    auto r = call(d, b, {"bogus"});
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->error == "unknown command 'bogus' (try 'help')");
    r = call(d, b, {"cert", "bogus", "x"});
    BOOST_TEST(r->error == "unknown command 'cert bogus' (try 'help')");
    r = call(d, b, {"cert"});
    BOOST_TEST(r->error == "incomplete command 'cert' (try 'help cert')");
    r = call(d, b, {});
    BOOST_TEST(r->error == "empty command (try 'help')");
    r = call(d, b, {"DOMAINS"}); // commands are case-sensitive
    BOOST_TEST(r->error == "unknown command 'DOMAINS' (try 'help')");
    r = call(d, b, {"bad\x01name"});
    BOOST_TEST(r->error == "unknown command 'bad?name' (try 'help')");
    BOOST_TEST(b.calls.empty());
}

BOOST_AUTO_TEST_CASE(argument_counts) {
    Dispatcher d;
    FakeBackend b;
    std::vector<std::pair<Words, std::string>> cases = {
        {{"cert", "add", "a.pem"}, "usage: cert add CERT KEY"},
        {{"cert", "add", "a", "b", "c"}, "usage: cert add CERT KEY"},
        {{"cert", "replace"}, "usage: cert replace CERT KEY"},
        {{"cert", "remove"}, "usage: cert remove DOMAIN"},
        {{"cert", "remove", "a.test", "b.test"}, "usage: cert remove DOMAIN"},
        {{"domains", "x"}, "usage: domains"},
        {{"certs", "x"}, "usage: certs"},
        {{"streams", "x"}, "usage: streams"},
        {{"stats", "x"}, "usage: stats"},
        {{"cert", "set", "site1", "/a/c.pem"}, "usage: cert set NAME CERT KEY"},
        {{"cert", "commit"}, "usage: cert commit NAME"},
        {{"reload", "now"}, "usage: reload"},
        {{"close"}, "usage: close PEER [CONDITION]"},
        {{"resolve", "a", "b"}, "usage: resolve DOMAIN"},
        {{"metrics", "x"}, "usage: metrics"},
        {{"capture", "start", "b.test"}, "usage: capture start PEER FILE"},
        {{"capture", "start", "b.test", "/a.cap", "x"}, "usage: capture start PEER FILE"},
        {{"capture", "stop", "a", "b"}, "usage: capture stop [FILE|PEER]"},
        {{"captures", "x"}, "usage: captures"},
    };
    for (const auto& [words, err] : cases) {
        auto r = call(d, b, words);
        BOOST_REQUIRE(r.has_value());
        BOOST_TEST(r->error == err);
    }
    BOOST_TEST(b.calls.empty());
}

BOOST_AUTO_TEST_CASE(routing) {
    Dispatcher d;
    FakeBackend b;
    b.replies["cert_remove"] = Reply::fail("no certificate serves x.test");
    std::vector<std::pair<Words, Call>> cases = {
        {{"domains"}, {"domains", {}}},
        {{"certs"}, {"certs", {}}},
        {{"streams"}, {"streams", {}}},
        {{"stats"}, {"stats", {}}},
        {{"metrics"}, {"metrics", {}}},
        {{"cert", "add", "/a/c.pem", "/a/k.pem"}, {"cert_add", {"/a/c.pem", "/a/k.pem"}}},
        {{"cert", "replace", "/a/c 2.pem", "/a/k.pem"}, {"cert_replace", {"/a/c 2.pem", "/a/k.pem"}}},
        {{"cert", "remove", "x.test"}, {"cert_remove", {"x.test"}}},
        {{"cert", "new", "site1"}, {"cert_new", {"site1"}}},
        {{"cert", "set", "site1", "/a/c.pem", "/a/k.pem"}, {"cert_set", {"site1", "/a/c.pem", "/a/k.pem"}}},
        {{"cert", "commit", "site1"}, {"cert_commit", {"site1"}}},
        {{"cert", "abort", "site1"}, {"cert_abort", {"site1"}}},
        {{"cert", "show"}, {"cert_show", {""}}},
        {{"cert", "show", "x.test"}, {"cert_show", {"x.test"}}},
        {{"reload"}, {"reload", {}}},
        {{"close", "s3"}, {"close", {"s3", ""}}},
        {{"close", "b.test", "reset"}, {"close", {"b.test", "reset"}}},
        {{"resolve", "b.test"}, {"resolve", {"b.test"}}},
        {{"capture", "start", "*", "/var/tmp/all.cap"}, {"capture_start", {"*", "/var/tmp/all.cap"}}},
        {{"capture", "start", "127.0.0.1:5269", "rel/b.cap"}, {"capture_start", {"127.0.0.1:5269", "rel/b.cap"}}},
        {{"capture", "stop"}, {"capture_stop", {""}}},
        {{"capture", "stop", "b.test"}, {"capture_stop", {"b.test"}}},
        {{"captures"}, {"captures", {}}},
    };
    for (const auto& [words, want] : cases) {
        b.calls.clear();
        auto r = call(d, b, words);
        BOOST_REQUIRE(r.has_value());
        BOOST_REQUIRE(b.calls.size() == 1u);
        BOOST_TEST(b.calls[0] == want);
        if (want.name == "cert_remove") {
            BOOST_TEST(r->error == "no certificate serves x.test");
        } else {
            BOOST_TEST(r->error.empty());
            BOOST_TEST(r->lines == Words({want.name + " reply"}), boost::test_tools::per_element());
        }
    }
}

BOOST_AUTO_TEST_CASE(help) {
    Dispatcher d;
    FakeBackend b;
    auto r = call(d, b, {"help"});
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->error.empty());
    BOOST_TEST(r->lines.size() == d.commands().size());
    for (const char* u : {"domains", "certs", "streams", "stats", "metrics", "cert add CERT KEY", "cert replace CERT KEY",
                          "cert remove DOMAIN", "cert new NAME", "cert set NAME CERT KEY", "cert commit NAME",
                          "cert abort NAME", "cert show [NAME]", "reload", "close PEER [CONDITION]",
                          "resolve DOMAIN", "capture start PEER FILE", "capture stop [FILE|PEER]", "captures",
                          "help [COMMAND]"}) {
        bool found = false;
        for (const auto& l : r->lines) found = found || l.rfind(std::string(u) + "  ", 0) == 0;
        BOOST_TEST(found, "help lists " << u);
    }
    // Summaries start in the same column.
    auto col = r->lines[0].find("  local domains");
    BOOST_TEST(r->lines[5].find("  load a certificate") == col);

    r = call(d, b, {"help", "cert"}); // add, replace, remove, new, set, commit, abort, show
    BOOST_TEST(r->lines.size() == 8u);
    r = call(d, b, {"help", "cert", "remove"});
    BOOST_TEST(r->lines.size() == 1u);
    r = call(d, b, {"help", "capture"}); // start, stop (not "captures": another word)
    BOOST_TEST(r->lines.size() == 2u);
    r = call(d, b, {"capture"});
    BOOST_TEST(r->error == "incomplete command 'capture' (try 'help capture')");
    r = call(d, b, {"capture", "begin", "*", "x"});
    BOOST_TEST(r->error == "unknown command 'capture begin' (try 'help')");
    r = call(d, b, {"help", "nope"});
    BOOST_TEST(r->error == "unknown command 'nope' (try 'help')");
    BOOST_TEST(b.calls.empty());
}

BOOST_AUTO_TEST_CASE(extending_the_table) {
    Dispatcher d;
    FakeBackend b;
    Words seen;
    d.add({{"cert", "set"}, "NAME PEM", "stage a PEM text", 2, 2,
           [&seen](const Args& a, Backend&, Done done) {
               seen = a;
               done(Reply::ok());
           },
           false});
    d.add({{"resolve"}, "DOMAIN", "show the routes to DOMAIN", 1, 1,
           [](const Args& a, Backend&, Done done) { done(Reply::ok({"route " + a[0]})); }});
    d.add({{"stats"}, "[RESET]", "replaced", 0, 1, [](const Args&, Backend&, Done done) { done(Reply::ok({"new"})); }});
    d.add({{"boom"}, "", "throws", 0, 0, [](const Args&, Backend&, Done) -> void { throw std::runtime_error("bad"); }});

    BOOST_TEST(call(d, b, {"resolve", "b.test"})->lines == Words({"route b.test"}), boost::test_tools::per_element());
    BOOST_TEST(call(d, b, {"stats", "reset"})->lines == Words({"new"}), boost::test_tools::per_element());
    BOOST_TEST(call(d, b, {"boom"})->error == "internal error: bad");
    BOOST_TEST(call(d, b, {"cert", "set", "a", "-----BEGIN"})->error.empty());
    BOOST_TEST(seen == Words({"a", "-----BEGIN"}), boost::test_tools::per_element());
    BOOST_TEST(call(d, b, {"help", "resolve"})->lines.size() == 1u);

    // Logging: arguments of a log_args = false command are left out.
    BOOST_TEST(d.describe({"cert", "set", "a", "-----BEGIN"}) == "cert set (2 argument(s) not logged)");
    BOOST_TEST(d.describe({"cert", "add", "/my certs/a.pem", "k"}) == "cert add \"/my certs/a.pem\" k");
    BOOST_TEST(d.describe({"x\x1b[31m"}) == "x?[31m");
    BOOST_TEST(d.describe({std::string(2000, 'a')}).size() == 515u);
}

BOOST_AUTO_TEST_SUITE_END()

// ===========================================================================
BOOST_FIXTURE_TEST_SUITE(server, LoopFixture)

BOOST_AUTO_TEST_CASE(commands_on_one_connection) {
    mode_t old = ::umask(0); // the socket must be 0600 whatever the umask
    {
        Server srv(&loop, backend);
        auto r = srv.listen(sock);
        ::umask(old);
        BOOST_REQUIRE_MESSAGE(r.ok(), r.error());
        struct stat st{};
        BOOST_REQUIRE(::lstat(sock.c_str(), &st) == 0);
        BOOST_TEST(S_ISSOCK(st.st_mode));
        BOOST_TEST((st.st_mode & 07777) == 0600u);

        Client c(&loop, sock);
        auto r1 = c.command("domains");
        BOOST_TEST(r1.error.empty());
        BOOST_TEST(r1.lines == Words({"domains reply"}), boost::test_tools::per_element());
        auto r2 = c.command("cert add \"/etc/my certs/a.pem\" /etc/k.pem");
        BOOST_TEST(r2.error.empty());
        auto r3 = c.command("nope");
        BOOST_TEST(r3.error == "unknown command 'nope' (try 'help')");
        auto r4 = c.command("cert add \"/unterminated");
        BOOST_TEST(r4.error == "unterminated quote at column 10");
        auto r5 = c.command("stats");
        BOOST_TEST(r5.error.empty());
        BOOST_REQUIRE(backend.calls.size() == 3u);
        BOOST_TEST(backend.calls[1] == (Call{"cert_add", {"/etc/my certs/a.pem", "/etc/k.pem"}}));
        BOOST_TEST(srv.connections() == 1u);

        // One info line per command, with the command (paths, no contents).
        BOOST_TEST(logs.find("] domains: OK, 1 line (") != std::string::npos, logs);
        BOOST_TEST(logs.find("] cert add \"/etc/my certs/a.pem\" /etc/k.pem: OK, 1 line (") != std::string::npos, logs);
        BOOST_TEST(logs.find("] nope: ERR unknown command 'nope' (try 'help')") != std::string::npos, logs);
        BOOST_TEST(logs.find("(unparsable request): ERR unterminated quote") != std::string::npos, logs);
        BOOST_TEST(logs.find(" info [admin c1 pid ") != std::string::npos, logs);

        c.close();
        BOOST_TEST(run_until(&loop, [&] { return srv.connections() == 0; }));
        srv.close();
        BOOST_TEST(!fs::exists(sock));
    }
    finish();
}

BOOST_AUTO_TEST_CASE(pipelined_in_order_with_late_answers) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    backend.delays["domains"] = 80; // answers later, from a uv timer
    backend.delays["certs"] = 10;
    backend.replies["certs"] = Reply::fail("certs failed");
    Client c(&loop, sock);
    auto t0 = std::chrono::steady_clock::now();
    c.send("domains\nstats\n\ncerts\r\nstreams\n"); // blank line: no reply
    std::vector<Reply> got;
    for (int i = 0; i < 4; ++i) {
        auto r = c.reply();
        BOOST_REQUIRE(r.has_value());
        got.push_back(*r);
    }
    BOOST_TEST((std::chrono::steady_clock::now() - t0 >= std::chrono::milliseconds(80)));
    BOOST_TEST(got[0].lines == Words({"domains reply"}), boost::test_tools::per_element());
    BOOST_TEST(got[1].lines == Words({"stats reply"}), boost::test_tools::per_element());
    BOOST_TEST(got[2].error == "certs failed");
    BOOST_TEST(got[3].lines == Words({"streams reply"}), boost::test_tools::per_element());
    // One at a time: the backend saw them in order.
    std::vector<Call> want = {{"domains", {}}, {"stats", {}}, {"certs", {}}, {"streams", {}}};
    BOOST_TEST(backend.calls == want, boost::test_tools::per_element());
    // Nothing more.
    BOOST_TEST(!c.reply(100).has_value());
    srv.close();
    BOOST_TEST(c.wait_eof());
    finish();
}

BOOST_AUTO_TEST_CASE(commands_wait_for_the_running_one) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    backend.hold = {"stats"};
    Client c(&loop, sock);
    c.send("stats\ndomains\n");
    BOOST_REQUIRE(run_until(&loop, [&] { return backend.held.size() == 1; }));
    BOOST_TEST(!c.reply(100).has_value());
    BOOST_TEST(backend.calls.size() == 1u); // domains waits
    backend.held[0](Reply::ok({"OK", "ERR not an error"}));
    auto r1 = c.reply();
    auto r2 = c.reply();
    BOOST_REQUIRE((r1 && r2));
    BOOST_TEST(r1->lines == Words({"OK", "ERR not an error"}), boost::test_tools::per_element());
    BOOST_TEST(r2->lines == Words({"domains reply"}), boost::test_tools::per_element());
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(many_pipelined_with_backpressure) {
    Server srv(&loop, backend);
    ServerLimits lim;
    lim.max_pending_bytes = 512; // reading pauses often
    lim.max_output_bytes = 1024; // so do commands
    srv.set_limits(lim);
    BOOST_REQUIRE(srv.listen(sock).ok());
    backend.replies["stats"] = Reply::ok({std::string(300, 's')});
    const int n = 3000;
    std::string batch;
    for (int i = 0; i < n; ++i) batch += (i % 3 == 0) ? "stats\n" : (i % 3 == 1) ? "domains\n" : "bogus\n";
    Client c(&loop, sock);
    c.send(batch);
    std::vector<Reply> got;
    BOOST_REQUIRE(run_until(&loop, [&] {
        c.drain();
        while (auto r = c.reader.next()) got.push_back(std::move(*r));
        return got.size() == static_cast<std::size_t>(n) || c.eof;
    }, 30000));
    BOOST_REQUIRE(got.size() == static_cast<std::size_t>(n));
    bool in_order = true;
    for (int i = 0; i < n; ++i) {
        const auto& r = got[static_cast<std::size_t>(i)];
        if (i % 3 == 0) in_order = in_order && r.lines.size() == 1 && r.lines[0].size() == 300;
        if (i % 3 == 1) in_order = in_order && r.lines == Words({"domains reply"});
        if (i % 3 == 2) in_order = in_order && r.error.rfind("unknown command 'bogus'", 0) == 0;
    }
    BOOST_TEST(in_order);
    BOOST_TEST(backend.calls.size() == static_cast<std::size_t>(n - n / 3));
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(eof_after_requests_still_answers) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    backend.delays["domains"] = 30;
    Client c(&loop, sock);
    c.send("domains\nstats"); // the last line has no "\n"
    ::shutdown(c.fd, SHUT_WR);  // like `echo domains | socat - UNIX-CONNECT:...`
    auto r1 = c.reply();
    auto r2 = c.reply();
    BOOST_REQUIRE((r1 && r2));
    BOOST_TEST(r1->lines == Words({"domains reply"}), boost::test_tools::per_element());
    BOOST_TEST(r2->lines == Words({"stats reply"}), boost::test_tools::per_element());
    BOOST_TEST(c.wait_eof());
    BOOST_TEST(run_until(&loop, [&] { return srv.connections() == 0; }));
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(oversize_line_is_refused_and_closes) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    {
        Client c(&loop, sock);
        c.send("domains\ncert remove " + std::string(5000, 'x') + "\nstats\n");
        auto r1 = c.reply();
        auto r2 = c.reply();
        BOOST_REQUIRE((r1 && r2));
        BOOST_TEST(r1->lines == Words({"domains reply"}), boost::test_tools::per_element());
        // (5012 bytes, or "more than 4096" if the line arrived in pieces)
        BOOST_TEST(r2->error.rfind("line too long (", 0) == 0u, r2->error);
        BOOST_TEST(c.wait_eof());
        BOOST_TEST(!c.reader.next().has_value()); // stats was not answered
    }
    {
        Client c(&loop, sock); // no newline at all
        c.send(std::string(4097, 'y'));
        auto r = c.reply();
        BOOST_REQUIRE(r.has_value());
        BOOST_TEST(r->error == "line too long (more than 4096 bytes)");
        BOOST_TEST(c.wait_eof());
    }
    {
        Client c(&loop, sock); // exactly the limit is fine
        auto r = c.command("cert remove " + std::string(kMaxLineBytes - 12, 'z'));
        BOOST_TEST(r.error.empty());
    }
    BOOST_TEST(backend.calls.size() == 2u);
    BOOST_TEST(logs.find("; closing the connection") != std::string::npos);
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(client_disconnects_while_reply_pending) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    backend.hold = {"stats"};
    {
        Client c(&loop, sock);
        c.send("stats\ndomains\n");
        BOOST_REQUIRE(run_until(&loop, [&] { return backend.held.size() == 1; }));
    } // gone
    run_until(&loop, [] { return false; }, 50);
    backend.held[0](Reply::ok({"late"})); // written to a closed socket: no crash
    BOOST_TEST(run_until(&loop, [&] { return srv.connections() == 0; }));

    // The server closes first; the answer comes after the connection is freed.
    Client c2(&loop, sock);
    c2.send("stats\n");
    BOOST_REQUIRE(run_until(&loop, [&] { return backend.held.size() == 2; }));
    srv.close();
    BOOST_TEST(c2.wait_eof());
    BOOST_TEST(!fs::exists(sock));
    run_until(&loop, [&] { return !uv_loop_alive(&loop); });
    backend.held[1](Reply::ok({"too late"}));
    backend.held[1](Reply::ok({"twice"})); // ignored
    BOOST_TEST(logs.find("stats: OK, 1 line (") != std::string::npos);
    BOOST_TEST(logs.find("connection closed, reply dropped)") != std::string::npos, logs);
    finish();
}

BOOST_AUTO_TEST_CASE(done_called_twice) {
    Server srv(&loop, backend);
    srv.dispatcher().add({{"twice"}, "", "answers twice (a backend bug)", 0, 0,
                          [](const Args&, Backend&, Done d) {
                              d(Reply::ok({"one"}));
                              d(Reply::ok({"two"}));
                          }});
    BOOST_REQUIRE(srv.listen(sock).ok());
    Client c(&loop, sock);
    auto r = c.command("twice");
    BOOST_TEST(r.lines == Words({"one"}), boost::test_tools::per_element());
    auto r2 = c.command("domains");
    BOOST_TEST(r2.lines == Words({"domains reply"}), boost::test_tools::per_element());
    BOOST_TEST(logs.find("twice: answered twice; the second answer (OK, 1 line) is ignored") != std::string::npos);
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(idle_timeout) {
    Server srv(&loop, backend);
    ServerLimits lim;
    lim.idle_timeout_ms = 100;
    srv.set_limits(lim);
    BOOST_REQUIRE(srv.listen(sock).ok());
    {
        Client c(&loop, sock);
        BOOST_TEST(c.wait_eof(3000));
    }
    // Not while a command runs.
    backend.hold = {"stats"};
    Client c(&loop, sock);
    c.send("stats\n");
    BOOST_REQUIRE(run_until(&loop, [&] { return backend.held.size() == 1; }));
    run_until(&loop, [] { return false; }, 300);
    c.drain();
    BOOST_TEST(!c.eof);
    backend.held[0](Reply::ok());
    auto r = c.reply();
    BOOST_TEST(r.has_value());
    BOOST_TEST(c.wait_eof(3000));
    BOOST_TEST(logs.find("idle, closing the connection") != std::string::npos);
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(connection_limit) {
    Server srv(&loop, backend);
    ServerLimits lim;
    lim.max_connections = 1;
    srv.set_limits(lim);
    BOOST_REQUIRE(srv.listen(sock).ok());
    Client c1(&loop, sock);
    BOOST_TEST(c1.command("domains").error.empty());
    Client c2(&loop, sock);
    auto r = c2.reply();
    BOOST_REQUIRE(r.has_value());
    BOOST_TEST(r->error == "too many admin connections (at most 1)");
    BOOST_TEST(c2.wait_eof());
    BOOST_TEST(c1.command("stats").error.empty());
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(stale_socket_is_replaced) {
    { // a socket file nobody listens on (a crashed daemon's)
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, sock.c_str(), sizeof sa.sun_path - 1);
        BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
        ::close(fd);
        BOOST_REQUIRE(fs::is_socket(sock));
    }
    Server srv(&loop, backend);
    auto r = srv.listen(sock);
    BOOST_REQUIRE_MESSAGE(r.ok(), r.error());
    BOOST_TEST(logs.find("removed stale admin socket " + sock) != std::string::npos);
    struct stat st{};
    BOOST_REQUIRE(::lstat(sock.c_str(), &st) == 0);
    BOOST_TEST((st.st_mode & 07777) == 0600u);
    Client c(&loop, sock);
    BOOST_TEST(c.command("domains").error.empty());
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(live_socket_is_refused) {
    Server a(&loop, backend);
    BOOST_REQUIRE(a.listen(sock).ok());
    Server b(&loop, backend);
    auto r = b.listen(sock);
    BOOST_REQUIRE(!r.ok());
    BOOST_TEST(r.error() == "admin socket " + sock + " is in use by another process");
    BOOST_TEST(!b.listening());
    // a still works, and its socket file is still there.
    Client c(&loop, sock);
    BOOST_TEST(c.command("stats").error.empty());
    BOOST_TEST(a.listen(sock).error().find("already listening") != std::string::npos);
    a.close();
    b.close();
    finish();
}

BOOST_AUTO_TEST_CASE(bad_paths) {
    Server srv(&loop, backend);
    auto r = srv.listen((dir.path / "missing" / "admin.sock").string());
    BOOST_REQUIRE(!r.ok());
    BOOST_TEST(r.error() == "cannot create admin socket " + (dir.path / "missing" / "admin.sock").string() +
                                ": directory " + (dir.path / "missing").string() + ": does not exist");
    BOOST_TEST(!fs::exists(dir.path / "missing"));

    std::ofstream(sock) << "not a socket\n";
    r = srv.listen(sock);
    BOOST_REQUIRE(!r.ok());
    BOOST_TEST(r.error() == "cannot create admin socket " + sock + ": the file exists and is not a socket");
    BOOST_TEST(fs::is_regular_file(sock)); // left alone

    r = srv.listen("/tmp/" + std::string(120, 'p'));
    BOOST_REQUIRE(!r.ok());
    BOOST_TEST(r.error().find("is too long (125 bytes, at most 107)") != std::string::npos, r.error());
    BOOST_TEST(!srv.listen("").ok());
    finish();
}

BOOST_AUTO_TEST_CASE(server_destroyed_before_loop_runs) {
    {
        Server srv(&loop, backend);
        BOOST_REQUIRE(srv.listen(sock).ok());
        backend.hold = {"stats"};
        Client c(&loop, sock);
        c.send("stats\n");
        BOOST_REQUIRE(run_until(&loop, [&] { return backend.held.size() == 1; }));
    } // ~Server: handles still closing, memory freed by the loop below
    finish();
    backend.held[0](Reply::ok()); // after uv_loop_close: dropped
    BOOST_TEST(!fs::exists(sock));
}

BOOST_AUTO_TEST_SUITE_END()

// ===========================================================================
// The s2smuxctl binary, spawned on the same loop as the server. Its path comes
// from $S2SMUXCTL, else from the build tree next to this test.

namespace {

std::string ctl_path() {
    if (const char* p = std::getenv("S2SMUXCTL"); p && *p) return p;
    std::error_code ec;
    auto self = fs::read_symlink("/proc/self/exe", ec);
    if (ec) return {};
    auto p = self.parent_path().parent_path().parent_path() / "tools" / "ctl" / "s2smuxctl";
    return fs::exists(p) ? p.string() : std::string();
}

boost::test_tools::assertion_result have_ctl(boost::unit_test::test_unit_id) {
    boost::test_tools::assertion_result res(!ctl_path().empty());
    res.message() << "s2smuxctl not found (set S2SMUXCTL to its path)";
    return res;
}

struct CtlResult {
    std::int64_t status = -1;
    int signal = 0;
    std::string out, err;
};

CtlResult run_ctl(uv_loop_t* loop, const Words& args, const std::string& cwd = {}, const Words& env_extra = {}) {
    struct Proc {
        uv_process_t proc{};
        uv_pipe_t out{}, err{};
        CtlResult res;
        bool exited = false;
        int eofs = 0;
        int open = 0;
        std::string* sink(uv_handle_t* h) { return h == reinterpret_cast<uv_handle_t*>(&out) ? &res.out : &res.err; }
    };
    auto p = std::make_unique<Proc>();
    uv_pipe_init(loop, &p->out, 0);
    uv_pipe_init(loop, &p->err, 0);
    p->out.data = p->err.data = p->proc.data = p.get();

    Words argv_s = {ctl_path()};
    argv_s.insert(argv_s.end(), args.begin(), args.end());
    std::vector<char*> argv;
    for (auto& a : argv_s) argv.push_back(a.data());
    argv.push_back(nullptr);
    Words env_s;
    for (char** e = environ; *e; ++e) {
        if (std::strncmp(*e, "S2SMUX_SOCKET=", 14) != 0) env_s.emplace_back(*e);
    }
    env_s.insert(env_s.end(), env_extra.begin(), env_extra.end());
    std::vector<char*> envp;
    for (auto& e : env_s) envp.push_back(e.data());
    envp.push_back(nullptr);

    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    stdio[1].data.stream = reinterpret_cast<uv_stream_t*>(&p->out);
    stdio[2].flags = static_cast<uv_stdio_flags>(UV_CREATE_PIPE | UV_WRITABLE_PIPE);
    stdio[2].data.stream = reinterpret_cast<uv_stream_t*>(&p->err);
    uv_process_options_t opt{};
    opt.file = argv[0];
    opt.args = argv.data();
    opt.env = envp.data();
    opt.cwd = cwd.empty() ? nullptr : cwd.c_str();
    opt.stdio_count = 3;
    opt.stdio = stdio;
    opt.exit_cb = [](uv_process_t* h, std::int64_t status, int sig) {
        auto* p = static_cast<Proc*>(h->data);
        p->res.status = status;
        p->res.signal = sig;
        p->exited = true;
    };
    int rc = uv_spawn(loop, &p->proc, &opt);
    p->open = 3;
    auto close_cb = [](uv_handle_t* h) { --static_cast<Proc*>(h->data)->open; };
    if (rc == 0) {
        for (uv_pipe_t* s : {&p->out, &p->err}) {
            uv_read_start(reinterpret_cast<uv_stream_t*>(s),
                          [](uv_handle_t*, std::size_t, uv_buf_t* b) { *b = uv_buf_init(new char[4096], 4096); },
                          [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
                              auto* p = static_cast<Proc*>(s->data);
                              if (n > 0) p->sink(reinterpret_cast<uv_handle_t*>(s))->append(b->base, n);
                              if (n < 0) {
                                  ++p->eofs;
                                  uv_read_stop(s);
                              }
                              delete[] b->base;
                          });
        }
        BOOST_TEST(run_until(loop, [&] { return p->exited && p->eofs == 2; }, 30000));
    } else {
        BOOST_TEST_ERROR("uv_spawn " << argv_s[0] << ": " << uv_strerror(rc));
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&p->proc), close_cb);
    uv_close(reinterpret_cast<uv_handle_t*>(&p->out), close_cb);
    uv_close(reinterpret_cast<uv_handle_t*>(&p->err), close_cb);
    run_until(loop, [&] { return p->open == 0; });
    BOOST_REQUIRE(p->open == 0);
    return p->res;
}

} // namespace

BOOST_FIXTURE_TEST_SUITE(s2smuxctl, LoopFixture, *boost::unit_test::precondition(have_ctl))

BOOST_AUTO_TEST_CASE(listing_and_escaping) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    auto r = run_ctl(&loop, {"--socket", sock, "domains"});
    BOOST_TEST(r.status == 0);
    BOOST_TEST(r.out == "domains reply\n");
    BOOST_TEST(r.err == "");

    backend.replies["certs"] = Reply::ok({"OK", "ERR x", "", " indented", "plain"});
    r = run_ctl(&loop, {"-s", sock, "certs"});
    BOOST_TEST(r.status == 0);
    BOOST_TEST(r.out == "OK\nERR x\n\n indented\nplain\n");

    r = run_ctl(&loop, {"stats"}, {}, {"S2SMUX_SOCKET=" + sock}); // socket from the environment
    BOOST_TEST(r.status == 0);
    BOOST_TEST(r.out == "stats reply\n");

    r = run_ctl(&loop, {"--socket=" + sock, "help", "cert"});
    BOOST_TEST(r.status == 0);
    BOOST_TEST(r.out.find("cert add CERT KEY") != std::string::npos, r.out);
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(errors_exit_1) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    backend.replies["cert_remove"] = Reply{{"removed from b.test"}, "no certificate serves x.test"};
    auto r = run_ctl(&loop, {"--socket", sock, "cert", "remove", "x.test"});
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.out == "removed from b.test\n");
    BOOST_TEST(r.err == "s2smuxctl: no certificate serves x.test\n");
    r = run_ctl(&loop, {"--socket", sock, "cert", "add", "only-one.pem"});
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.err == "s2smuxctl: usage: cert add CERT KEY\n");
    r = run_ctl(&loop, {"--socket", sock, "frobnicate"});
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.err == "s2smuxctl: unknown command 'frobnicate' (try 'help')\n");
    backend.replies["capture_start"] = Reply::fail("cannot capture into /nope/a.cap: no such file or directory");
    r = run_ctl(&loop, {"--socket", sock, "capture", "start", "*", "/nope/a.cap"});
    BOOST_TEST(r.status == 1);
    BOOST_TEST(r.out == "");
    BOOST_TEST(r.err == "s2smuxctl: cannot capture into /nope/a.cap: no such file or directory\n");
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(relative_paths_made_absolute) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    std::string d = dir.path.string();
    auto r = run_ctl(&loop, {"--socket", sock, "cert", "add", "certs/a.pem", "./my key.pem"}, d);
    BOOST_TEST(r.status == 0, r.err);
    r = run_ctl(&loop, {"--socket", sock, "cert", "replace", "/abs/a.pem", "../k.pem"}, d);
    BOOST_TEST(r.status == 0, r.err);
    r = run_ctl(&loop, {"--socket", sock, "cert", "remove", "rel.test"}, d); // not a path
    BOOST_TEST(r.status == 0, r.err);
    // A capture FILE is the daemon's to resolve (relative to its configuration's directory).
    r = run_ctl(&loop, {"--socket", sock, "capture", "start", "*", "caps/all.cap"}, d);
    BOOST_TEST(r.status == 0, r.err);
    std::vector<Call> want = {
        {"cert_add", {d + "/certs/a.pem", d + "/my key.pem"}},
        {"cert_replace", {"/abs/a.pem", d + "/../k.pem"}},
        {"cert_remove", {"rel.test"}},
        {"capture_start", {"*", "caps/all.cap"}},
    };
    BOOST_TEST(backend.calls == want, boost::test_tools::per_element());
    srv.close();
    finish();
}

BOOST_AUTO_TEST_CASE(usage_and_connection_errors_exit_2) {
    auto r = run_ctl(&loop, {"--socket", sock, "domains"}); // nothing there
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.err == "s2smuxctl: cannot connect to " + sock +
                            ": No such file or directory (is s2smuxd running? is [gateway] admin_socket set?)\n");

    { // a stale socket file: Connection refused
        int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
        sockaddr_un sa{};
        sa.sun_family = AF_UNIX;
        std::strncpy(sa.sun_path, sock.c_str(), sizeof sa.sun_path - 1);
        BOOST_REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
        ::close(fd);
    }
    r = run_ctl(&loop, {"--socket", sock, "domains"});
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.err == "s2smuxctl: cannot connect to " + sock +
                            ": Connection refused (is s2smuxd running? is [gateway] admin_socket set?)\n");

    r = run_ctl(&loop, {"domains"});
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.err == "s2smuxctl: no admin socket given (use --socket PATH or set S2SMUX_SOCKET)\n");
    r = run_ctl(&loop, {"--socket", sock});
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.err.find("no command given") != std::string::npos);
    r = run_ctl(&loop, {"--bogus", "domains"});
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.err.find("unknown option '--bogus'") != std::string::npos);
    r = run_ctl(&loop, {"--timeout", "soon", "domains"});
    BOOST_TEST(r.status == 2);
    r = run_ctl(&loop, {"--socket", sock, "cert", "remove", "a\nstats"});
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.err.find("control character") != std::string::npos, r.err);

    r = run_ctl(&loop, {"--version"});
    BOOST_TEST(r.status == 0);
    BOOST_TEST(r.out.rfind("s2smuxctl ", 0) == 0u);
    r = run_ctl(&loop, {"--help"});
    BOOST_TEST(r.status == 0);
    BOOST_TEST(r.out.find("cert replace CERT KEY") != std::string::npos);
    finish();
}

BOOST_AUTO_TEST_CASE(timeout) {
    Server srv(&loop, backend);
    BOOST_REQUIRE(srv.listen(sock).ok());
    backend.hold = {"stats"};
    auto r = run_ctl(&loop, {"--socket", sock, "--timeout", "0.3", "stats"});
    BOOST_TEST(r.status == 2);
    BOOST_TEST(r.err == "s2smuxctl: no reply from " + sock + " within 0.3 s\n");
    BOOST_REQUIRE(backend.held.size() == 1u);
    backend.held[0](Reply::ok()); // the client is gone
    BOOST_TEST(run_until(&loop, [&] { return srv.connections() == 0; }));
    srv.close();
    finish();
}

BOOST_AUTO_TEST_SUITE_END()
