// The daemon's capture file (daemon/capture_file.h) on a real loop, how
// captures match streams, and captures of real streams on loopback
// (daemon/captures.h): decided once the peer's header names it, detached
// when nothing matches, partial when started mid-stream, E records.
#define BOOST_TEST_MODULE capture_file
#include <boost/test/unit_test.hpp>

#include "capture/format.h"
#include "capture/replay.h"
#include "common/log.h"
#include "daemon/capture_file.h"
#include "daemon/captures.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

using namespace s2smux;
namespace fs = std::filesystem;

namespace {

struct Fixture {
    uv_loop_t loop{};
    fs::path dir;
    std::string logs;
    std::string header = capture::header_line("2026-12-02T10:00:00.000Z");

    Fixture() {
        uv_loop_init(&loop);
        std::string tmpl = (fs::temp_directory_path() / "s2smux-capfile-XXXXXX").string();
        BOOST_REQUIRE(::mkdtemp(tmpl.data()) != nullptr);
        dir = tmpl;
        log::capture(&logs);
    }
    ~Fixture() {
        log::capture(nullptr);
        uv_run(&loop, UV_RUN_DEFAULT);
        BOOST_CHECK(uv_loop_close(&loop) == 0);
        std::error_code ec;
        fs::remove_all(dir, ec);
    }

    std::shared_ptr<CaptureFile> make(const std::string& name, std::size_t max = CaptureFile::kMaxQueueBytes) {
        return CaptureFile::create(&loop, (dir / name).string(), 1000, header, max);
    }
    // Opens and runs the loop until the answer; returns the error ("" = open).
    std::string open(CaptureFile& f) {
        std::string err = "?";
        f.open([&](const std::string& e) { err = e; });
        while (err == "?" && uv_run(&loop, UV_RUN_ONCE) != 0) {}
        return err;
    }
    void close(CaptureFile& f) {
        bool done = false;
        f.close([&] { done = true; });
        while (!done && uv_run(&loop, UV_RUN_ONCE) != 0) {}
        BOOST_REQUIRE(done);
    }
    std::string read(const std::string& name) {
        std::ifstream in(dir / name, std::ios::binary);
        std::ostringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }
    std::string header_text() const { return header + "\n"; }
    unsigned mode(const std::string& name) {
        struct stat st {};
        BOOST_REQUIRE(::stat((dir / name).c_str(), &st) == 0);
        return st.st_mode & 07777;
    }
};

} // namespace

BOOST_AUTO_TEST_CASE(matching) {
    BOOST_TEST(capture_matches("*", "", ""));
    BOOST_TEST(capture_matches("b.test", "b.test", "127.0.0.1:5269"));
    BOOST_TEST(!capture_matches("b.test", "c.test", "127.0.0.1:5269"));
    BOOST_TEST(!capture_matches("b.test", "", "127.0.0.1:5269"));
    BOOST_TEST(capture_matches("*.b.test", "x.b.test", ""));
    BOOST_TEST(!capture_matches("*.b.test", "b.test", ""));
    BOOST_TEST(!capture_matches("*.b.test", "xb.test", ""));
    BOOST_TEST(capture_matches("127.0.0.1", "b.test", "127.0.0.1:5269"));
    BOOST_TEST(capture_matches("127.0.0.1:5269", "", "127.0.0.1:5269"));
    BOOST_TEST(!capture_matches("127.0.0.1:5270", "", "127.0.0.1:5269"));
    BOOST_TEST(!capture_matches("127.0.0.1", "", ""));
    BOOST_TEST(capture_matches("::1", "", "[::1]:5269"));
    BOOST_TEST(capture_matches("[::1]:5269", "", "[::1]:5269"));
}

BOOST_AUTO_TEST_CASE(peer_arguments) {
    BOOST_TEST(*parse_capture_match("*") == "*");
    BOOST_TEST(*parse_capture_match("B.Test.") == "b.test");
    BOOST_TEST(*parse_capture_match("*.B.test") == "*.b.test");
    BOOST_TEST(*parse_capture_match("127.0.0.1") == "127.0.0.1");
    BOOST_TEST(*parse_capture_match("127.0.0.1:5269") == "127.0.0.1:5269");
    BOOST_TEST(*parse_capture_match("[::1]") == "::1");
    BOOST_TEST(*parse_capture_match("[::1]:5269") == "[::1]:5269");
    for (const char* bad : {"", "bad..name", "a b", "*.", "**", "b.*.test", "127.0.0.1:x", "host.test:5269"}) {
        auto r = parse_capture_match(bad);
        BOOST_TEST(!r, bad);
        if (!r) BOOST_TEST(r.error().find("is not a peer") != std::string::npos, r.error());
    }
}

BOOST_FIXTURE_TEST_SUITE(file, Fixture)

BOOST_AUTO_TEST_CASE(header_then_lines_mode_0600) {
    mode_t old = ::umask(0);
    auto f = make("a.cap");
    f->capture_write("S 1 1 kind=outer-in\n"); // queued while opening
    BOOST_TEST(open(*f) == "");
    ::umask(old);
    BOOST_TEST(f->capture_origin() == 1000);
    f->capture_write("< 2 1 x\n");
    f->capture_write("E 3 1 closed\n");
    close(*f);
    std::string want = header + "\nS 1 1 kind=outer-in\n< 2 1 x\nE 3 1 closed\n";
    BOOST_TEST(read("a.cap") == want);
    BOOST_TEST(f->bytes_written() == want.size());
    BOOST_TEST(f->bytes_dropped() == 0u);
    BOOST_TEST(mode("a.cap") == 0600u);
    f->capture_write("> 4 1 late\n"); // after close: dropped
    BOOST_TEST(f->bytes_dropped() == 11u);
    BOOST_TEST(read("a.cap") == want);
}

BOOST_AUTO_TEST_CASE(reopened_in_the_same_run_appends_without_a_second_header) {
    auto f = make("b.cap");
    BOOST_TEST(open(*f) == "");
    f->capture_write("E 1 1 x\n");
    close(*f);
    auto g = make("b.cap");
    BOOST_TEST(open(*g) == "");
    g->capture_write("E 2 2 y\n");
    close(*g);
    BOOST_TEST(read("b.cap") == header + "\nE 1 1 x\nE 2 2 y\n");
    auto parsed = capture::parse(read("b.cap"));
    BOOST_REQUIRE(parsed.ok());
    BOOST_TEST(parsed->records.size() == 2u);
}

BOOST_AUTO_TEST_CASE(refuses_other_files) {
    {
        std::ofstream(dir / "old.cap") << "s2smux-capture 1 2020-01-01T00:00:00Z\nE 1 1 x\n";
    }
    auto f = make("old.cap");
    std::string err = open(*f);
    BOOST_TEST(err.find("not empty") != std::string::npos, err);
    BOOST_TEST(read("old.cap") == "s2smux-capture 1 2020-01-01T00:00:00Z\nE 1 1 x\n");

    auto g = make("missing/x.cap");
    err = open(*g);
    BOOST_TEST(err == "no such file or directory");

    auto h = make("");
    err = open(*h); // the directory itself
    BOOST_TEST(!err.empty());
    close(*h); // never opened: done at once
}

BOOST_AUTO_TEST_CASE(rotation_moves_an_earlier_run_aside) {
    const std::string old_text = "s2smux-capture 1 2020-01-01T00:00:00Z\nE 1 1 x\n";
    auto age = [&](const std::string& name) {
        struct timespec ts[2] = {{1700000000, 0}, {1700000000, 0}}; // 2023-11-14T22:13:20Z
        BOOST_REQUIRE(::utimensat(AT_FDCWD, (dir / name).c_str(), ts, 0) == 0);
    };
    {
        std::ofstream(dir / "r.cap") << old_text;
    }
    age("r.cap");
    auto f = make("r.cap");
    f->set_rotate(true);
    BOOST_TEST(open(*f) == "");
    BOOST_TEST(f->rotated_to() == (dir / "r.cap.20231114T221320Z").string());
    f->capture_write("E 2 2 y\n");
    close(*f);
    BOOST_TEST(read("r.cap.20231114T221320Z") == old_text);
    BOOST_TEST(read("r.cap") == header + "\nE 2 2 y\n");
    BOOST_TEST(logs.find("moved to") != std::string::npos, logs);

    // Again, with the same modification time: the name is taken.
    {
        std::ofstream(dir / "r.cap") << old_text;
    }
    age("r.cap");
    auto g = make("r.cap");
    g->set_rotate(true);
    BOOST_TEST(open(*g) == "");
    BOOST_TEST(g->rotated_to() == (dir / "r.cap.20231114T221320Z-1").string());
    close(*g);
    BOOST_TEST(read("r.cap.20231114T221320Z-1") == old_text);
    BOOST_TEST(read("r.cap") == header + "\n");

    // Its own file of this run is appended to, not moved.
    auto h = make("r.cap");
    h->set_rotate(true);
    BOOST_TEST(open(*h) == "");
    BOOST_TEST(h->rotated_to() == "");
    close(*h);
}

BOOST_AUTO_TEST_CASE(an_existing_empty_file_is_made_private) {
    {
        std::ofstream(dir / "e.cap");
    }
    ::chmod((dir / "e.cap").c_str(), 0644);
    auto f = make("e.cap");
    BOOST_TEST(open(*f) == "");
    BOOST_TEST(mode("e.cap") == 0600u);
    close(*f);
    BOOST_TEST(read("e.cap") == header + "\n");
}

BOOST_AUTO_TEST_CASE(bounded_queue_drops_counts_and_notes) {
    auto f = make("d.cap", 64);
    std::string line = "E 1 1 " + std::string(23, 'x') + "\n"; // 30 bytes
    f->capture_write(line); // 30 queued while opening
    f->capture_write(line); // 60
    f->capture_write(line); // 90 > 64: dropped
    f->capture_write(line); // dropped
    BOOST_TEST(f->bytes_dropped() == 60u);
    BOOST_TEST(logs.find("records dropped") != std::string::npos, logs);
    BOOST_TEST(open(*f) == "");
    auto drain = [&] { while (f->bytes_queued() > 0 && uv_run(&loop, UV_RUN_ONCE) != 0) {} };
    drain();
    f->capture_write("E 9 1 y\n"); // fits again: the note goes first
    drain();
    f->capture_write(line);
    f->capture_write(line);
    f->capture_write(line); // dropped again (not logged again); no record follows to carry a note
    close(*f);
    std::string text = read("d.cap");
    BOOST_TEST(text == header + "\n" + line + line + "# 60 bytes of records dropped\nE 9 1 y\n" + line + line);
    BOOST_TEST(f->bytes_dropped() == 90u);
    std::size_t warnings = 0;
    for (std::size_t at = 0; (at = logs.find("records dropped", at)) != std::string::npos; ++at) ++warnings;
    BOOST_TEST(warnings == 1u);
    BOOST_TEST(capture::parse(text).ok());
}

BOOST_AUTO_TEST_CASE(close_while_opening_flushes_then_closes) {
    auto f = make("c.cap");
    f->open(nullptr);
    f->capture_write("E 1 1 x\n");
    bool closed = false;
    f->close([&] { closed = true; });
    f->capture_write("E 2 1 late\n"); // after close(): dropped
    f.reset();                        // the requests keep it alive
    while (!closed && uv_run(&loop, UV_RUN_ONCE) != 0) {}
    BOOST_TEST(closed);
    BOOST_TEST(read("c.cap") == header + "\nE 1 1 x\n");
}

BOOST_AUTO_TEST_SUITE_END()

// ===========================================================================
// Captures of real streams: a listener on loopback, raw client sockets.

namespace {

struct Owner final : net::StreamOwner {
    Captures* caps = nullptr;
    std::vector<net::Stream*> streams;
    std::vector<std::string> closed;
    bool stream_hosts(net::Stream&, std::string_view d) override { return d == "a.test"; }
    bool stream_has_cert(std::string_view) override { return false; }
    xmpp::DialbackVerdict stream_dialback_request(net::Stream&, const xmpp::DialbackRequest&) override {
        return xmpp::DialbackVerdict::Invalid;
    }
    void stream_authenticated(net::Stream&, std::string_view, std::string_view, bool, xmpp::AuthMethod) override {}
    void stream_verify_answer(net::Stream&, std::string_view, std::string_view, std::string_view, bool) override {}
    void stream_ready(net::Stream&) override {}
    void stream_stanza(net::Stream&, const xml::Node&, const xmpp::StanzaRoute&) override {}
    void stream_mux_enabled(net::Stream&) override {}
    void stream_opened(net::Stream& s) override { caps->stream_opened(s); }
    void stream_closed(net::Stream& s, const xmpp::CloseInfo& info) override {
        if (s.tap()) caps->stream_closed(s, info.reason);
        streams.erase(std::remove(streams.begin(), streams.end(), &s), streams.end());
        closed.push_back(info.reason);
    }
};

struct StreamFixture : Fixture {
    tls::CertStore certs;
    tls::TrustStore trust;
    xmpp::DialbackKeys keys{"unit test secret"};
    Owner owner;
    net::Context ctx;
    Captures caps{&loop};
    uv_tcp_t server{};
    int port = 0;
    std::uint64_t next_id = 1;

    StreamFixture() {
        caps.set_origin(static_cast<TimeMs>(uv_now(&loop)), "2026-12-02T10:00:00.000Z");
        owner.caps = &caps;
        ctx.loop = &loop;
        ctx.certs = &certs;
        ctx.trust = &trust;
        ctx.keys = &keys;
        ctx.owner = &owner;
        uv_tcp_init(&loop, &server);
        server.data = this;
        sockaddr_in sa{};
        uv_ip4_addr("127.0.0.1", 0, &sa);
        BOOST_REQUIRE(uv_tcp_bind(&server, reinterpret_cast<sockaddr*>(&sa), 0) == 0);
        BOOST_REQUIRE(uv_listen(reinterpret_cast<uv_stream_t*>(&server), 8, [](uv_stream_t* srv, int st) {
            BOOST_REQUIRE(st == 0);
            auto* f = static_cast<StreamFixture*>(srv->data);
            xmpp::SessionConfig cfg;
            cfg.role = xmpp::Role::Receiver;
            cfg.tls_policy = xmpp::TlsPolicy::Optional;
            cfg.tls_possible = false;
            if (auto* s = net::Stream::accept(f->ctx, srv, net::StreamKind::OuterIn, false, cfg, f->next_id++))
                f->owner.streams.push_back(s);
        }) == 0);
        sockaddr_storage ss{};
        int len = sizeof ss;
        uv_tcp_getsockname(&server, reinterpret_cast<sockaddr*>(&ss), &len);
        port = ntohs(reinterpret_cast<sockaddr_in*>(&ss)->sin_port);
    }
    ~StreamFixture() {
        for (net::Stream* s : std::vector<net::Stream*>(owner.streams)) s->shutdown("test over");
        caps.stop_all();
        uv_close(reinterpret_cast<uv_handle_t*>(&server), nullptr);
        uv_run(&loop, UV_RUN_DEFAULT);
    }

    // One loop pass as the gateway makes it: I/O, then captures, then writes.
    void pass() {
        uv_run(&loop, UV_RUN_NOWAIT);
        if (caps.has_pending()) caps.tick();
        std::vector<net::Stream*> dirty;
        dirty.swap(ctx.dirty);
        for (net::Stream* s : dirty) s->flush();
    }
    bool until(const std::function<bool()>& pred, int ms = 5000) {
        auto end = std::chrono::steady_clock::now() + std::chrono::milliseconds(ms);
        while (!pred()) {
            if (std::chrono::steady_clock::now() > end) return false;
            pass();
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        return true;
    }

    // A peer: connected and accepted; returns its socket.
    int connect_peer() {
        std::size_t before = owner.streams.size();
        int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        sockaddr_in sa{};
        sa.sin_family = AF_INET;
        sa.sin_port = htons(static_cast<std::uint16_t>(port));
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        BOOST_REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&sa), sizeof sa) == 0);
        BOOST_REQUIRE(until([&] { return owner.streams.size() > before; }));
        return fd;
    }
    void send(int fd, std::string_view data) {
        BOOST_REQUIRE(::send(fd, data.data(), data.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(data.size()));
    }
    static std::string header(std::string_view from) {
        return "<?xml version='1.0'?><stream:stream xmlns='jabber:server' "
               "xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='" +
               std::string(from) + "' to='a.test' version='1.0'>";
    }

    std::shared_ptr<Capture> start(const std::string& name, const std::string& match) {
        std::string err = "?";
        auto c = caps.start((dir / name).string(), {match}, "admin", [&](const std::string& e) { err = e; });
        BOOST_REQUIRE(c.ok());
        BOOST_REQUIRE(until([&] { return err != "?"; }));
        BOOST_REQUIRE(err == "");
        return *c;
    }
    void stop(const std::shared_ptr<Capture>& c) {
        bool done = false;
        caps.stop(c, [&] { done = true; });
        BOOST_REQUIRE(until([&] { return done; }));
    }
    std::vector<capture::StreamOutcome> replay(const std::string& name) {
        auto cap = capture::parse(read(name));
        BOOST_REQUIRE_MESSAGE(cap.ok(), (cap.ok() ? "" : cap.error()));
        return capture::replay(*cap, capture::ReplayOptions{});
    }
};

} // namespace

BOOST_FIXTURE_TEST_SUITE(streams, StreamFixture)

BOOST_AUTO_TEST_CASE(no_capture_no_tap) {
    int fd = connect_peer();
    BOOST_TEST(owner.streams.back()->tap() == nullptr);
    BOOST_TEST(!caps.has_pending());
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(from_the_first_byte_to_the_close) {
    auto c = start("all.cap", "*");
    int fd = connect_peer();
    net::Stream* s = owner.streams.back();
    BOOST_TEST(s->tap() != nullptr);
    BOOST_TEST(caps.has_pending()); // the remote domain is not known yet
    send(fd, header("c.test"));
    BOOST_REQUIRE(until([&] { return !caps.has_pending(); }));
    BOOST_TEST(c->live == 1u);
    send(fd, "</stream:stream>");
    BOOST_REQUIRE(until([&] { return owner.streams.empty() && c->live == 0; })); // closed and freed: E written
    ::close(fd);
    BOOST_TEST(c->streams == 1u);
    stop(c);
    std::string text = read("all.cap");
    BOOST_TEST(text.find("S ") != std::string::npos);
    BOOST_TEST(text.find("partial=1") == std::string::npos);
    BOOST_TEST(text.find("kind=outer-in") != std::string::npos);
    BOOST_TEST(text.find("\nE ") != std::string::npos);
    BOOST_TEST(text.find("closed:") != std::string::npos, text);
    auto out = replay("all.cap");
    BOOST_REQUIRE(out.size() == 1u);
    BOOST_TEST(out[0].status == capture::StreamOutcome::Passed, out[0].report);
}

BOOST_AUTO_TEST_CASE(no_match_is_detached) {
    auto c = start("b.cap", "b.test");
    int fd = connect_peer();
    net::Stream* s = owner.streams.back();
    BOOST_TEST(s->tap() != nullptr);
    send(fd, header("c.test"));
    BOOST_REQUIRE(until([&] { return s->tap() == nullptr; }));
    BOOST_TEST(!caps.has_pending());
    BOOST_TEST(c->streams == 0u);
    ::close(fd);
    BOOST_REQUIRE(until([&] { return owner.streams.empty(); }));
    stop(c);
    BOOST_TEST(read("b.cap") == header_text());
}

BOOST_AUTO_TEST_CASE(started_mid_stream_is_partial) {
    int fd = connect_peer();
    net::Stream* s = owner.streams.back();
    send(fd, header("b.test"));
    BOOST_REQUIRE(until([&] { return s->session().remote_domain() == "b.test"; }));
    BOOST_TEST(s->tap() == nullptr);
    auto c = start("late.cap", "b.test");
    BOOST_TEST(caps.attach_running(c, owner.streams) == 1u);
    BOOST_TEST(caps.attach_running(c, owner.streams) == 0u); // once
    BOOST_TEST(s->tap() != nullptr);
    send(fd, "<db:result from='b.test' to='a.test'>abc</db:result>");
    BOOST_REQUIRE(until([&] { return read("late.cap").find("type='invalid'") != std::string::npos; }));
    stop(c);
    BOOST_TEST(s->tap() == nullptr);
    BOOST_TEST(c->partial == 1u);
    std::string text = read("late.cap");
    BOOST_TEST(text.find("partial=1") != std::string::npos, text);
    BOOST_TEST(text.find("db:result") != std::string::npos, text);
    auto out = replay("late.cap");
    BOOST_REQUIRE(out.size() == 1u);
    BOOST_TEST(out[0].status == capture::StreamOutcome::Skipped);
    ::close(fd);
}

BOOST_AUTO_TEST_CASE(stop_ends_and_detaches) {
    auto c = start("stop.cap", "127.0.0.1");
    int fd = connect_peer();
    net::Stream* s = owner.streams.back();
    send(fd, header("c.test"));
    BOOST_REQUIRE(until([&] { return !caps.has_pending(); }));
    BOOST_TEST(s->tap() != nullptr);
    stop(c);
    BOOST_TEST(s->tap() == nullptr);
    BOOST_TEST(!caps.accepting());
    std::string text = read("stop.cap");
    BOOST_TEST(text.find("capture\\x20stopped") != std::string::npos, text);
    auto out = replay("stop.cap");
    BOOST_REQUIRE(out.size() == 1u);
    BOOST_TEST(out[0].status == capture::StreamOutcome::Passed, out[0].report);
    ::close(fd);
}

BOOST_AUTO_TEST_SUITE_END()
