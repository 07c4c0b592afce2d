// libFuzzer target: the multiplexing core (mux::MuxSession) on both ends of
// one stream. Two sans-I/O sessions, gateway A (a.test, initiator) and B
// (b.test, receiver), are negotiated back to back with simulated TLS 1.3 up
// to <enabled/>, as in tests/unit/test_mux_session.cc; proofs and chains are
// signed and verified for real against a test PKI made once per process.
//
// Input: byte 0 is the configuration (kDefer*, kSmallLimits, kStrict), the
// rest are lines, one operation each:
//   <XML  bytes injected into B's input as if A had sent them
//   >XML  bytes injected into A's input as if B had sent them
//   a C D A adds certificate C for domain D (tables below); b C D: B does
//   r D / q D   A / B removes domain D
//   x I D C P   a hand-made <add/> to B: id mode I, domain D, chain mode C,
//               proof mode P (see craft_add)
//   m F T / n F T  A / B sends a stanza from domain F to domain T
//   t K         time passes (kSteps[K]), timers run on both sides
//   V K / S K   deferred verifications / signatures complete (K&1: newest first)
//   c           A announces domains
// Parameters are single bytes counted from '0', modulo the table sizes.
//
// Invariants, on top of the sanitizers, for each side:
//  - a known mux element never closes the stream, and every <add/> gets
//    exactly one <added/> or <failed/> with its id (once all work is done);
//    an add known to be bad is never accepted;
//  - ids of the side's own <add/> and <remove/> strictly increase;
//  - name sets agree with the accepted certificates, never hold one of the
//    side's own domains, stay within max_domains, and the count of pending
//    verifications is the number of verifications under way;
//  - everything written is well-formed XML; stanzas are delivered only
//    when the mux rule allows them.
#include "common/base64.h"
#include "common/log.h"
#include "fuzz_common.h"
#include "mux/add_check.h"
#include "mux/mux_session.h"
#include "mux/proof.h"
#include "tests/support/test_certs.h"
#include "tls/trust.h"
#include "xml/writer.h"
#include "xmpp/jid.h"
#include "xmpp/session.h"

#include <algorithm>
#include <charconv>
#include <iterator>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

using namespace s2smux;
using namespace s2smux::mux;
using test::CertSpec;
using test::kDay;
using test::TestCa;
using xmpp::Role;
using xmpp::Session;
using xmpp::SessionConfig;
using xmpp::TlsState;

namespace {

constexpr std::uint8_t kDeferSign = 0x01;
constexpr std::uint8_t kDeferVerify = 0x02;
constexpr std::uint8_t kSmallLimits = 0x04;
constexpr std::uint8_t kStrict = 0x08;

// ------------------------------------------------------------- the PKI

struct Cert {
    test::IssuedCert issued;
    std::shared_ptr<tls::LocalCert> local;
};

struct Pki {
    std::int64_t base = test::now(); // unix seconds at monotonic time 0
    TestCa ca{"Fuzz CA"};
    TestCa other{"Untrusted CA"};
    TestCa inter = ca.intermediate("Fuzz Intermediate");
    tls::TrustStore trust;
    Cert tls_a, tls_b;
    std::vector<Cert> a_certs, b_certs;

    Cert make(std::vector<std::string> dns, std::string cn, std::int64_t not_after = 0, const TestCa* by = nullptr) {
        CertSpec spec;
        spec.cn = std::move(cn);
        spec.dns = std::move(dns);
        spec.not_after = not_after;
        Cert c{(by ? *by : ca).issue(spec), nullptr};
        c.local = c.issued.local();
        return c;
    }

    Pki() {
        if (auto r = trust.add_ca_pem(ca.cert_pem()); !r) throw std::runtime_error(r.error());
        tls_a = make({"a.test"}, "a.test");
        tls_b = make({"b.test"}, "b.test");
        a_certs.push_back(make({"c.test"}, "c.test"));
        a_certs.push_back(make({"c.test", "c2.test"}, "c.test", base + 400 * kDay)); // renewal: same subject
        a_certs.push_back(make({"d.test", "*.w.test"}, "d.test"));
        a_certs.push_back(make({"g.test"}, "g.test", 0, &inter));                    // leaf + intermediate
        a_certs.push_back(make({"c.test"}, "c.test untrusted", 0, &other));
        a_certs.push_back(make({"s.test"}, "s.test", base + 60));                    // expires in a minute
        a_certs.push_back(make({"m.test", "b.test"}, "m.test"));                     // also names B's domain
        a_certs.push_back(make({"n.test"}, ""));                                     // no CN
        b_certs.push_back(make({"e.test"}, "e.test"));
        b_certs.push_back(make({"f.test", "*.v.test"}, "f.test"));
        b_certs.push_back(make({"e.test"}, "e.test", base + 60));
    }
};

const Pki& pki() {
    static const Pki* p = new Pki; // never destroyed: verifications may outlive main
    return *p;
}

const xmpp::DialbackKeys& keys() {
    static xmpp::DialbackKeys k("fuzz mux secret");
    return k;
}

const std::vector<std::string> kDomains = {"c.test", "c2.test", "d.test", "x.w.test", "g.test", "s.test",
                                           "m.test", "n.test", "a.test", "b.test", "e.test", "f.test",
                                           "y.v.test", "C.TEST", "", "bad..name", "*.w.test", "w.test"};
const TimeMs kSteps[] = {1000, 31000, 301000, 2 * kDay * 1000, 400 * kDay * 1000};

std::string b64(std::string_view s) {
    std::string out;
    base64_encode(out, s);
    return out;
}

// Parameter i of an operation line, counted from '0' so seeds stay readable.
unsigned param(std::string_view p, std::size_t i) {
    return i < p.size() ? static_cast<unsigned char>(p[i] - '0') : 0u;
}

bool covers(const std::vector<std::string>& names, std::string_view d) {
    auto dot = d.find('.');
    for (const auto& n : names)
        if (n == d || (dot != std::string_view::npos && dot > 0 && n.size() > 1 && n[0] == '*' &&
                       std::string_view(n).substr(1) == d.substr(dot)))
            return true;
    return false;
}

// ------------------------------------------------------------ one gateway

struct Gw;

// Sits between the session and the MuxSession to see every mux element.
struct Tap final : xmpp::MuxHandler {
    Gw& gw;
    explicit Tap(Gw& g) : gw(g) {}
    void mux_element(const xml::Node& el, TimeMs now) override;
    bool mux_send_allowed(std::string_view f, std::string_view t) const override;
    bool mux_check_receive(std::string_view f, std::string_view t, const char** why) const override;
    void mux_refuse(const xml::Node& el, const xmpp::StanzaRoute& r, const char* why) override;
    void mux_timer(TimeMs now) override;
    TimeMs mux_deadline() const override;
};

struct Gw final : xmpp::SessionHost, MuxHost {
    std::set<std::string, std::less<>> local;
    Limits limits;
    const TimeMs* clock = nullptr;
    bool defer_sign = false, defer_verify = false;
    Session s;
    std::unique_ptr<MuxSession> mux;
    Tap tap{*this};
    std::deque<std::function<void()>> signs, verifies;
    int start_tls = 0;
    fuzz::OutputCheck out;
    // Per add id: <add/>s received, of which known bad; <added/> and <failed/> sent.
    std::map<std::string, int, std::less<>> adds, bad_adds, added, failed;
    std::uint64_t last_own_id = 0;

    explicit Gw(SessionConfig cfg) : s(std::move(cfg), *this, keys()) {
        out.on_element_cb = [this](const xml::Node& el) { on_output(el); };
    }

    void on_output(const xml::Node& el) {
        if (el.ns != kNs) return;
        std::string id(el.attr("id"));
        if (el.name == "add" || el.name == "remove") {
            std::uint64_t v = 0;
            auto r = std::from_chars(id.data(), id.data() + id.size(), v);
            FUZZ_CHECK(r.ec == std::errc() && v > last_own_id, "own ids must increase:", id);
            last_own_id = v;
        } else if (el.name == "added" || el.name == "failed") {
            int& n = el.name == "added" ? added[id] : failed[id];
            ++n;
            FUZZ_CHECK(added[id] + failed[id] <= adds[id], "answer to an add never received, id", id);
            FUZZ_CHECK(added[id] <= adds[id] - bad_adds[id], "a bad add was accepted, id", id);
        }
    }

    // xmpp::SessionHost
    void session_wants_write() override {}
    void session_start_tls() override { ++start_tls; }
    bool session_hosts(std::string_view d) override { return d == "a.test" || d == "b.test"; }
    bool session_has_cert(std::string_view d) override { return d == "a.test"; }
    xmpp::DialbackVerdict session_dialback_request(const xmpp::DialbackRequest&) override {
        return xmpp::DialbackVerdict::Invalid;
    }
    void session_authenticated(std::string_view, std::string_view, bool, xmpp::AuthMethod) override {}
    void session_verify_answer(std::string_view, std::string_view, std::string_view, bool) override {}
    void session_ready() override {}
    void session_stanza(const xml::Node&, const xmpp::StanzaRoute& r) override {
        if (!mux) return;
        FUZZ_CHECK(mux->peer_has(r.from_domain) && mux->ours_has(r.to_domain), "stanza delivered against the mux rule:",
                   r.from_domain, r.to_domain);
    }
    void session_closed(const xmpp::CloseInfo&) override {}
    void session_mux_enabled() override {
        mux = std::make_unique<MuxSession>(s, *this, MuxSession::Binding::of(s, pki().base * 1000), limits, *clock);
        s.set_mux(&tap);
    }

    // MuxHost
    void mux_sign(std::shared_ptr<const tls::LocalCert> cert, std::string message,
                  std::function<void(Result<Signature>)> done) override {
        auto run = [cert, message = std::move(message), done = std::move(done)] { done(sign_proof(*cert, message)); };
        if (defer_sign) signs.emplace_back(std::move(run));
        else run();
    }
    void mux_verify(AddCheckInput in, std::function<void(AddCheckResult)> done) override {
        auto run = [in = std::move(in), done = std::move(done)] { done(check_add(pki().trust, in)); };
        if (defer_verify) verifies.emplace_back(std::move(run));
        else run();
    }
    bool mux_is_local(std::string_view d) override {
        if (local.count(d)) return true;
        // "*.x" is local when it covers one of ours.
        if (d.size() > 2 && d[0] == '*' && d[1] == '.')
            for (const auto& l : local)
                if (covers({std::string(d)}, l)) return true;
        return false;
    }
    void mux_names_changed() override {}
    void mux_add_answered(std::string_view, bool, AddFailure, std::string_view) override {}
    void mux_refused(const xmpp::StanzaHead&, Refusal, std::string_view) override {}
    void mux_refusing(const xmpp::StanzaHead&, Refusal) override {}

    static void drain(std::deque<std::function<void()>>& q, unsigned k) {
        if (q.empty()) return;
        if (k & 2) { // one only, oldest or newest
            auto f = std::move((k & 1) ? q.back() : q.front());
            (k & 1) ? q.pop_back() : q.pop_front();
            f();
            return;
        }
        auto work = std::move(q);
        q.clear();
        if (k & 1) std::reverse(work.begin(), work.end());
        for (auto& f : work) f();
    }

    void check_state() const {
        if (!mux) return;
        FUZZ_CHECK(mux->pending_verifications() == verifies.size(), "pending verifications miscounted");
        std::size_t names = 0;
        for (const auto& e : mux->peer()) {
            names += e.names.size();
            for (const auto& n : e.names) {
                FUZZ_CHECK(mux->peer_has(n), "accepted name not in the index:", n);
                FUZZ_CHECK(e.add_id == "tls" || !local.count(n), "the peer got one of our domains:", n);
            }
        }
        FUZZ_CHECK(names <= limits.max_domains, "over max_domains");
        for (const auto& e : mux->ours())
            for (const auto& n : e.names) FUZZ_CHECK(mux->ours_has(n), "own name not in the index:", n);
        for (const auto& d : kDomains) {
            bool p = false, o = false;
            for (const auto& e : mux->peer()) p |= covers(e.names, d);
            for (const auto& e : mux->ours()) o |= covers(e.names, d);
            FUZZ_CHECK(mux->peer_has(d) == p, "peer index disagrees for", d);
            FUZZ_CHECK(mux->ours_has(d) == o, "own index disagrees for", d);
        }
    }
};

bool known_mux_element(std::string_view n) {
    for (auto k : {"add", "added", "failed", "remove", "removed", "revoke", "announce", "refused"})
        if (n == k) return true;
    return false;
}

void Tap::mux_element(const xml::Node& el, TimeMs now) {
    bool was_closed = gw.s.closed();
    if (el.name == "add") ++gw.adds[std::string(el.attr("id"))];
    gw.mux->mux_element(el, now);
    if (known_mux_element(el.name) && el.ns == kNs)
        FUZZ_CHECK(was_closed || !gw.s.closed(), "a mux element closed the stream:", el.name);
}
bool Tap::mux_send_allowed(std::string_view f, std::string_view t) const { return gw.mux->mux_send_allowed(f, t); }
bool Tap::mux_check_receive(std::string_view f, std::string_view t, const char** why) const {
    return gw.mux->mux_check_receive(f, t, why);
}
void Tap::mux_refuse(const xml::Node& el, const xmpp::StanzaRoute& r, const char* why) { gw.mux->mux_refuse(el, r, why); }
void Tap::mux_timer(TimeMs now) { gw.mux->mux_timer(now); }
TimeMs Tap::mux_deadline() const { return gw.mux->mux_deadline(); }

// ------------------------------------------------------------ the stream

TlsState tls_state(const Cert& local, const Cert& peer) {
    TlsState t;
    t.active = true;
    t.tls13 = true;
    t.version = "TLS1.3";
    t.cipher = "AES-128-GCM";
    t.peer.present = true;
    t.peer.trusted = true;
    t.peer.identity = peer.local->identity;
    t.local = local.local->identity;
    t.exporter = std::string(32, '\x07');
    return t;
}

struct Net {
    TimeMs t = 1000;
    Gw a, b;
    std::string last_crafted_id = "1";
    std::uint64_t crafted = 0;

    static SessionConfig cfg(Role r) {
        SessionConfig c;
        c.role = r;
        if (r == Role::Initiator) {
            c.from = "a.test";
            c.to = "b.test";
            c.want_mux = true;
        } else {
            c.offer_mux = true;
        }
        return c;
    }

    explicit Net(std::uint8_t config) : a(cfg(Role::Initiator)), b(cfg(Role::Receiver)) {
        a.local = {"a.test", "c.test", "c2.test", "d.test", "g.test", "s.test", "m.test", "n.test"};
        b.local = {"b.test", "e.test", "f.test"};
        a.out.set_role(Role::Initiator);
        b.out.set_role(Role::Receiver);
        for (Gw* g : {&a, &b}) {
            g->clock = &t;
            g->defer_sign = config & kDeferSign;
            g->defer_verify = config & kDeferVerify;
            g->limits.strict = config & kStrict;
            if (config & kSmallLimits) {
                g->limits.max_domains = 4;
                g->limits.max_pending = 2;
                g->limits.add_rate = 1;
                g->limits.add_burst = 3;
            }
        }
        b.s.start(t);
        a.s.start(t);
        pump();
        FUZZ_CHECK(a.mux && b.mux, "mux not enabled by the handshake");
    }

    void pump() {
        for (int i = 0; i < 100; ++i) {
            std::string x, y;
            x.swap(a.s.out());
            y.swap(b.s.out());
            a.out.add(x);
            b.out.add(y);
            if (!x.empty()) b.s.on_bytes(x, t);
            if (!y.empty()) a.s.on_bytes(y, t);
            if (a.start_tls == 1 && b.start_tls == 1 && !a.s.tls_active()) {
                a.out.restart();
                b.out.restart();
                b.s.on_tls_established(tls_state(pki().tls_b, pki().tls_a), t);
                a.s.on_tls_established(tls_state(pki().tls_a, pki().tls_b), t);
            }
            if (x.empty() && y.empty() && a.s.out().empty() && b.s.out().empty()) {
                a.check_state();
                b.check_state();
                return;
            }
        }
        fuzz::fail("the gateways never went quiet");
    }

    // A hand-made <add/> from A, as a buggy or hostile gateway might send it.
    void craft_add(std::string_view p) {
        auto at = [&](std::size_t i) { return param(p, i); };
        unsigned id_mode = at(0) % 8, chain_mode = at(2) % 8, proof_mode = at(3) % 6;
        std::string domain = kDomains[at(1) % kDomains.size()];
        const Cert& cert = pki().a_certs[at(4) % pki().a_certs.size()];
        // Fresh ids far above A's own, so they do not collide by accident.
        std::string id;
        switch (id_mode) {
        case 0: id = std::to_string(1000000 + ++crafted); break;
        case 1: id = last_crafted_id; break;
        case 2: id = "0"; break;
        case 3: id = "01"; break;
        case 4: id = "99999999999999999999"; break;
        case 5: id = ""; break;
        case 6: id = "-1"; break;
        default: id = std::to_string(18446744073709551615ull - at(5)); break;
        }
        last_crafted_id = id;
        std::vector<std::string> certs; // base64 texts
        switch (chain_mode) {
        case 0:
        case 1:
            for (const auto& der : cert.issued.chain_der) certs.push_back(b64(der));
            if (chain_mode == 1) certs.push_back(b64(pki().ca.cert_der()));
            break;
        case 2: certs.push_back("!!not base64!!"); break;
        case 3: certs.push_back(b64(p.substr(std::min<std::size_t>(p.size(), 6)))); break;
        case 4: certs.assign(9, b64(cert.issued.der())); break;
        case 5: break;
        case 6: certs.push_back(""); break;
        default: certs.push_back(std::string(90000, 'A')); break;
        }
        const std::string& leaf = cert.issued.der();
        std::string msg = proof_message(a.s.tls().exporter, Signer::Initiator, b.s.stream_id(),
                                        proof_mode == 1 ? "424242" : id, xmpp::lowercase_domain(domain), leaf);
        std::string alg = "ecdsa_secp256r1_sha256", sig;
        if (proof_mode <= 1 && !msg.empty()) {
            auto s = sign_proof(*cert.local, msg);
            if (s) sig = s->value;
        }
        if (proof_mode == 2) sig = "garbage";
        if (proof_mode == 4) alg = "ed25519";
        if (proof_mode == 5) alg.clear();

        std::string x;
        xml::Writer w(x);
        w.open("add").xmlns(kNs).attr("id", id, true).attr("domain", domain, true);
        for (const auto& c : certs) w.open("cert").text(c).close();
        if (proof_mode != 3) w.open("proof").attr("alg", alg, true).text(b64(sig)).close();
        w.close();
        // Known bad: not the real chain, or not a valid proof over it.
        if (chain_mode > 1 || proof_mode != 0) ++b.bad_adds[id];
        b.s.on_bytes(x, t);
    }

    void op(std::string_view line) {
        if (line.empty()) return;
        char o = line[0];
        std::string_view p = line.substr(1);
        auto at = [&](std::size_t i) { return param(p, i); };
        const auto& ac = pki().a_certs;
        const auto& bc = pki().b_certs;
        switch (o) {
        case '<': b.s.on_bytes(p, t); break;
        case '>': a.s.on_bytes(p, t); break;
        case 'a': a.mux->add(ac[at(0) % ac.size()].local, kDomains[at(1) % kDomains.size()], t); break;
        case 'b': b.mux->add(bc[at(0) % bc.size()].local, kDomains[at(1) % kDomains.size()], t); break;
        case 'r': a.mux->remove(kDomains[at(0) % kDomains.size()], t); break;
        case 'q': b.mux->remove(kDomains[at(0) % kDomains.size()], t); break;
        case 'x': craft_add(p); break;
        case 'm':
        case 'n': {
            std::string st = "<message from='u@" + kDomains[at(0) % kDomains.size()] + "' to='v@" +
                             kDomains[at(1) % kDomains.size()] + "' id='m' type='chat'><body>x</body></message>";
            (o == 'm' ? b : a).s.on_bytes(st, t);
            break;
        }
        case 't':
            t += kSteps[at(0) % std::size(kSteps)];
            a.s.on_timer(t);
            b.s.on_timer(t);
            break;
        case 'V':
            Gw::drain(a.verifies, at(0));
            Gw::drain(b.verifies, at(0));
            break;
        case 'S':
            Gw::drain(a.signs, at(0));
            Gw::drain(b.signs, at(0));
            break;
        case 'c': // the daemon announces on an open stream only (at enable time)
            if (!a.s.closed()) a.mux->announce({"c.test", "d.test", "g.test"});
            break;
        default: return;
        }
        pump();
    }

    // Completes all outstanding work; then every add has had its answer.
    void finish() {
        for (int i = 0; i < 8 && (!a.signs.empty() || !b.signs.empty() || !a.verifies.empty() || !b.verifies.empty()); ++i) {
            Gw::drain(a.signs, 0);
            Gw::drain(b.signs, 0);
            pump();
            Gw::drain(a.verifies, 0);
            Gw::drain(b.verifies, 0);
            pump();
        }
        for (Gw* g : {&a, &b}) {
            if (g->s.closed()) continue;
            for (const auto& [id, n] : g->adds)
                FUZZ_CHECK(g->added[id] + g->failed[id] == n, "add without exactly one answer, id", id);
        }
    }
};

} // namespace

static std::string g_log; // log lines of the current input (kept from growing)

extern "C" int LLVMFuzzerInitialize(int*, char***) {
    log::capture(&g_log);
    pki(); // key generation once, not per input
    return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    g_log.clear();
    if (size < 1) return 0;
    std::string_view in(reinterpret_cast<const char*>(data + 1), size - 1);
    Net n(data[0]);
    int ops = 0;
    while (!in.empty() && ++ops <= 64) { // bounds the crypto per input
        auto nl = in.find('\n');
        n.op(in.substr(0, nl));
        in.remove_prefix(nl == std::string_view::npos ? in.size() : nl + 1);
    }
    n.finish();
    return 0;
}
