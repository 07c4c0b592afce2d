// The daemon's capture file (daemon/capture_file.h) on a real loop, and how
// captures match streams (daemon/captures.h).
#define BOOST_TEST_MODULE capture_file
#include <boost/test/unit_test.hpp>

#include "capture/format.h"
#include "common/log.h"
#include "daemon/capture_file.h"
#include "daemon/captures.h"

#include <sys/stat.h>
#include <unistd.h>

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
