// Resolver: static routes, then SRV (XEP-0368 + RFC 6120 §3.2), then A/AAAA,
// with c-ares driven by the libuv loop (sock-state callback -> uv_poll_t per
// socket, ares_timeout() -> uv_timer_t). Nothing here blocks.
//
// Memory and lifetime rules:
//  * every uv handle is heap-allocated and freed only in its close callback,
//    which touches nothing but the handle's own allocation, so handles may
//    finish closing after the Resolver is gone;
//  * a Query lives in Impl::queries until all of its c-ares operations have
//    called back (pending == 0); c-ares calls every callback exactly once,
//    also from ares_destroy() (ARES_EDESTRUCTION);
//  * user callbacks never run inside a c-ares callback or inside resolve():
//    results go through a one-shot zero timer (Deferred).
#include "route/resolver.h"

#include <ares.h>
#include <arpa/inet.h>
#include <netinet/in.h>

#include <algorithm>
#include <cmath>
#include <mutex>
#include <random>
#include <set>
#include <unordered_map>
#include <utility>

namespace s2smux::route {

// ---------------------------------------------------------------------------
// Pure helpers

std::vector<SrvRecord> order_srv(std::vector<SrvRecord> recs, const std::function<double()>& rnd) {
    // Group by (priority ascending, direct TLS first), keeping input order
    // inside a group, then do RFC 2782 weighted selection inside each group.
    std::stable_sort(recs.begin(), recs.end(), [](const SrvRecord& a, const SrvRecord& b) {
        if (a.priority != b.priority) return a.priority < b.priority;
        return a.direct_tls && !b.direct_tls;
    });
    std::vector<SrvRecord> out;
    out.reserve(recs.size());
    std::size_t i = 0;
    while (i < recs.size()) {
        std::size_t j = i;
        while (j < recs.size() && recs[j].priority == recs[i].priority && recs[j].direct_tls == recs[i].direct_tls) ++j;
        // RFC 2782: weight-0 records first, then pick by running sum.
        std::vector<SrvRecord> group(recs.begin() + static_cast<std::ptrdiff_t>(i),
                                     recs.begin() + static_cast<std::ptrdiff_t>(j));
        std::stable_partition(group.begin(), group.end(), [](const SrvRecord& r) { return r.weight == 0; });
        while (!group.empty()) {
            std::uint64_t sum = 0;
            for (const auto& r : group) sum += r.weight;
            double x = rnd ? rnd() : 0.0;
            if (!(x >= 0.0)) x = 0.0; // also catches NaN
            if (x >= 1.0) x = std::nextafter(1.0, 0.0);
            auto pick = static_cast<std::uint64_t>(std::floor(x * static_cast<double>(sum + 1)));
            if (pick > sum) pick = sum;
            std::size_t chosen = group.size() - 1;
            std::uint64_t running = 0;
            for (std::size_t k = 0; k < group.size(); ++k) {
                running += group[k].weight;
                if (running >= pick) {
                    chosen = k;
                    break;
                }
            }
            out.push_back(std::move(group[chosen]));
            group.erase(group.begin() + static_cast<std::ptrdiff_t>(chosen));
        }
        i = j;
    }
    return out;
}

namespace {

std::string lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
}

std::string strip_dot(std::string s) {
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
}

} // namespace

const RouteConfig* find_route(const std::vector<RouteConfig>& routes, std::string_view domain) {
    std::string d = strip_dot(lower(domain));
    if (d.empty()) return nullptr;
    for (const auto& r : routes)
        if (strip_dot(lower(r.domain)) == d) return &r;
    const RouteConfig* best = nullptr;
    std::size_t best_len = 0;
    for (const auto& r : routes) {
        std::string pat = strip_dot(lower(r.domain));
        if (pat.size() < 3 || pat.compare(0, 2, "*.") != 0) continue;
        std::string_view parent = std::string_view(pat).substr(1); // ".b.test"
        if (d.size() > parent.size() && d.compare(d.size() - parent.size(), parent.size(), parent) == 0 &&
            parent.size() > best_len) {
            best = &r;
            best_len = parent.size();
        }
    }
    return best;
}

// ---------------------------------------------------------------------------
// Resolver

namespace {

constexpr int kXmpps = 0;    // _xmpps-server._tcp (direct TLS)
constexpr int kXmpp = 1;     // _xmpp-server._tcp (STARTTLS)
constexpr int kAddr = 2;     // A/AAAA of a host
const char* const kServices[2] = {"_xmpps-server._tcp.", "_xmpp-server._tcp."};

void init_ares_library() {
    static std::once_flag once;
    std::call_once(once, [] { ares_library_init(ARES_LIB_INIT_ALL); });
}

std::string join(const std::vector<std::string>& v, std::string_view sep) {
    std::string out;
    for (std::size_t i = 0; i < v.size(); ++i) {
        if (i) out += sep;
        out += v[i];
    }
    return out;
}

// A one-shot zero timer carrying a result to its callback.
struct Deferred {
    uv_timer_t timer; // first member: the close callback deletes through it
    Resolver::Impl* impl = nullptr; // null when not tracked (after shutdown)
    std::string domain;
    Resolver::Callback cb;
    std::optional<Result<Resolution>> result;
};

void on_deferred_closed(uv_handle_t* h) { delete static_cast<Deferred*>(h->data); }
void on_handle_closed_poll(uv_handle_t* h) { delete reinterpret_cast<uv_poll_t*>(h); }
void on_handle_closed_timer(uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); }

} // namespace

struct Resolver::Impl {
    struct HostResult {
        int status = ARES_SUCCESS;
        std::vector<std::string> addresses;
    };

    struct Query {
        std::string domain;
        Callback cb;
        int pending = 0;
        enum class Phase { Srv, Addr, Fallback, RouteHost } phase = Phase::Srv;
        std::optional<RouteConfig> route;
        // SRV phase, per service
        int srv_status[2] = {ARES_SUCCESS, ARES_SUCCESS};
        std::vector<SrvRecord> srv[2];
        bool srv_dot[2] = {false, false};
        // address phase
        std::vector<SrvRecord> ordered;
        std::unordered_map<std::string, HostResult> hosts;
        std::vector<std::string> explain;
    };

    struct Op {
        Impl* impl;
        Query* q;
        int kind; // kXmpps, kXmpp, kAddr
        std::string host;
    };

    uv_loop_t* loop;
    std::vector<RouteConfig> routes;
    std::optional<Endpoint> nameserver;
    ResolverOptions opts;
    std::function<double()> rnd;

    ares_channel channel = nullptr;
    uv_timer_t* timer = nullptr;
    std::unordered_map<ares_socket_t, uv_poll_t*> polls;
    std::string servers; // "127.0.0.1:5353" for messages
    bool initialized = false;
    bool shut = false;

    std::unordered_map<Query*, std::unique_ptr<Query>> queries;
    std::set<Deferred*> deferred;

    Impl(uv_loop_t* l, std::vector<RouteConfig> r, std::optional<Endpoint> ns, ResolverOptions o)
        : loop(l), routes(std::move(r)), nameserver(std::move(ns)), opts(std::move(o)) {
        if (opts.rnd) {
            rnd = opts.rnd;
        } else {
            auto gen = std::make_shared<std::mt19937_64>(std::random_device{}());
            rnd = [gen] { return std::uniform_real_distribution<double>(0.0, 1.0)(*gen); };
        }
    }

    // --- c-ares <-> libuv glue ------------------------------------------

    static void sock_state_cb(void* data, ares_socket_t fd, int readable, int writable) {
        auto* self = static_cast<Impl*>(data);
        auto it = self->polls.find(fd);
        if (!readable && !writable) {
            if (it != self->polls.end()) {
                uv_close(reinterpret_cast<uv_handle_t*>(it->second), on_handle_closed_poll);
                self->polls.erase(it);
            }
            return;
        }
        uv_poll_t* p;
        if (it == self->polls.end()) {
            p = new uv_poll_t;
            if (uv_poll_init_socket(self->loop, p, fd) != 0) {
                // c-ares will time the query out; nothing else to do.
                delete p;
                return;
            }
            p->data = self;
            self->polls.emplace(fd, p);
        } else {
            p = it->second;
        }
        int events = (readable ? UV_READABLE : 0) | (writable ? UV_WRITABLE : 0);
        uv_poll_start(p, events, on_poll);
    }

    static void on_poll(uv_poll_t* p, int status, int events) {
        auto* self = static_cast<Impl*>(p->data);
        uv_os_fd_t fd;
        if (uv_fileno(reinterpret_cast<uv_handle_t*>(p), &fd) != 0) return;
        ares_socket_t rfd = (status < 0 || (events & UV_READABLE)) ? fd : ARES_SOCKET_BAD;
        ares_socket_t wfd = (status < 0 || (events & UV_WRITABLE)) ? fd : ARES_SOCKET_BAD;
        ares_process_fd(self->channel, rfd, wfd);
        self->update_timer();
    }

    static void on_timer(uv_timer_t* t) {
        auto* self = static_cast<Impl*>(t->data);
        ares_process_fd(self->channel, ARES_SOCKET_BAD, ARES_SOCKET_BAD);
        self->update_timer();
    }

    void update_timer() {
        if (!channel || !timer) return;
        struct timeval tv;
        if (ares_timeout(channel, nullptr, &tv)) {
            std::uint64_t ms = static_cast<std::uint64_t>(tv.tv_sec) * 1000 +
                               (static_cast<std::uint64_t>(tv.tv_usec) + 999) / 1000;
            uv_timer_start(timer, on_timer, ms, 0);
        } else {
            uv_timer_stop(timer);
        }
    }

    // --- init --------------------------------------------------------------

    Result<void> init() {
        if (shut) return make_error("DNS resolver: already shut down");
        if (initialized) return make_error("DNS resolver: already initialized");
        init_ares_library();

        struct ares_options o {};
        int mask = 0;
        o.sock_state_cb = &Impl::sock_state_cb;
        o.sock_state_cb_data = this;
        mask |= ARES_OPT_SOCK_STATE_CB;
        // Remote domains are absolute names: never append search domains.
        o.domains = nullptr;
        o.ndomains = 0;
        mask |= ARES_OPT_DOMAINS;
        if (opts.timeout_ms > 0) {
            o.timeout = opts.timeout_ms;
            mask |= ARES_OPT_TIMEOUTMS;
        }
        if (opts.tries > 0) {
            o.tries = opts.tries;
            mask |= ARES_OPT_TRIES;
        }
        char dns_only[] = "b";
        if (nameserver) {
            o.lookups = dns_only;
            mask |= ARES_OPT_LOOKUPS;
        }
        int rc = ares_init_options(&channel, &o, mask);
        if (rc != ARES_SUCCESS) {
            channel = nullptr;
            return make_error(std::string("DNS resolver: cannot initialize c-ares: ") + ares_strerror(rc));
        }
        if (nameserver) {
            std::string csv = nameserver->to_string();
            rc = ares_set_servers_ports_csv(channel, csv.c_str());
            if (rc != ARES_SUCCESS) {
                ares_destroy(channel);
                channel = nullptr;
                return make_error("DNS resolver: invalid name server " + csv + ": " + ares_strerror(rc));
            }
            servers = csv;
        } else {
            servers = describe_servers();
        }
        timer = new uv_timer_t;
        uv_timer_init(loop, timer);
        timer->data = this;
        initialized = true;
        return {};
    }

    std::string describe_servers() {
        struct ares_addr_port_node* list = nullptr;
        std::vector<std::string> names;
        if (ares_get_servers_ports(channel, &list) == ARES_SUCCESS) {
            for (auto* n = list; n; n = n->next) {
                char buf[INET6_ADDRSTRLEN] = {};
                Endpoint ep;
                if (n->family == AF_INET)
                    inet_ntop(AF_INET, &n->addr.addr4, buf, sizeof buf);
                else
                    inet_ntop(AF_INET6, &n->addr.addr6, buf, sizeof buf);
                ep.host = buf;
                ep.port = static_cast<std::uint16_t>(n->udp_port ? n->udp_port : 53);
                names.push_back(ep.to_string());
            }
            ares_free_data(list);
        }
        if (names.empty()) return "the system name servers";
        return join(names, ", ");
    }

    // --- messages ----------------------------------------------------------

    std::string describe(int status) const {
        switch (status) {
        case ARES_ENOTFOUND: return "NXDOMAIN";
        case ARES_ENODATA: return "NODATA";
        case ARES_ETIMEOUT: return "DNS timeout talking to " + servers;
        case ARES_ECONNREFUSED: return "DNS connection refused by " + servers;
        case ARES_ESERVFAIL: return "DNS server failure (SERVFAIL) from " + servers;
        case ARES_EREFUSED: return "DNS query refused (REFUSED) by " + servers;
        case ARES_EFORMERR:
        case ARES_EBADRESP: return "bad DNS response from " + servers;
        case ARES_ENOTIMP: return "DNS query not implemented (NOTIMP) by " + servers;
        case ARES_EBADNAME: return "invalid DNS name";
        case ARES_ECANCELLED:
        case ARES_EDESTRUCTION: return "resolver shut down";
        default: return std::string("DNS error: ") + ares_strerror(status);
        }
    }

    static bool is_absent(int status) { return status == ARES_ENOTFOUND || status == ARES_ENODATA; }

    // --- delivery ------------------------------------------------------------

    void defer(const std::string& domain, Callback cb, Result<Resolution> result, bool track) {
        auto* d = new Deferred;
        d->impl = track ? this : nullptr;
        d->domain = domain;
        d->cb = std::move(cb);
        d->result.emplace(std::move(result));
        uv_timer_init(loop, &d->timer);
        d->timer.data = d;
        uv_timer_start(&d->timer, on_deferred, 0, 0);
        if (track) deferred.insert(d);
    }

    static void on_deferred(uv_timer_t* t) {
        auto* d = static_cast<Deferred*>(t->data);
        if (d->impl) d->impl->deferred.erase(d);
        Callback cb = std::move(d->cb);
        Result<Resolution> r = std::move(*d->result);
        uv_close(reinterpret_cast<uv_handle_t*>(t), on_deferred_closed);
        if (cb) cb(std::move(r));
    }

    // Ends a query whose operations have all called back.
    void finish(Query* q, Result<Resolution> r) {
        auto it = queries.find(q);
        if (it == queries.end()) return;
        std::unique_ptr<Query> owned = std::move(it->second);
        queries.erase(it);
        defer(owned->domain, std::move(owned->cb), std::move(r), true);
    }

    void fail(Query* q, const std::string& msg) { finish(q, make_error(q->domain + ": " + msg)); }

    // --- resolve -------------------------------------------------------------

    void resolve(const std::string& domain_in, Callback cb) {
        if (shut) {
            defer(domain_in, std::move(cb), make_error(domain_in + ": resolver shut down"), false);
            return;
        }
        if (!initialized) {
            defer(domain_in, std::move(cb), make_error(domain_in + ": resolver not initialized"), true);
            return;
        }

        // IP literal domains ("127.0.0.1", "[::1]") need no DNS.
        std::string_view lit = domain_in;
        if (lit.size() > 2 && lit.front() == '[' && lit.back() == ']') lit = lit.substr(1, lit.size() - 2);
        if (is_ip_literal(lit)) {
            Resolution res;
            Target t;
            t.address = std::string(lit);
            t.port = 5269;
            t.host = t.address;
            t.source = "IP literal " + domain_in;
            res.targets.push_back(std::move(t));
            res.explain = domain_in + ": IP literal, port 5269";
            defer(domain_in, std::move(cb), std::move(res), true);
            return;
        }

        auto norm = normalize_domain(domain_in);
        if (!norm) {
            defer(domain_in, std::move(cb), make_error(domain_in + ": invalid domain (" + norm.error() + ")"), true);
            return;
        }
        const std::string& domain = *norm;

        if (const RouteConfig* r = find_route(routes, domain)) {
            const Endpoint& ep = r->address;
            std::string line = "route " + r->domain + ": " + ep.to_string() + (r->direct_tls ? " (direct TLS)" : " (STARTTLS)");
            if (r->policy) line += std::string(", policy ") + xmpp::to_string(*r->policy);
            if (is_ip_literal(ep.host)) {
                Resolution res;
                Target t;
                t.address = ep.host;
                t.port = ep.port;
                t.direct_tls = r->direct_tls;
                t.host = ep.host;
                t.source = "route " + r->domain;
                t.policy = r->policy;
                res.targets.push_back(std::move(t));
                res.explain = line;
                defer(domain, std::move(cb), std::move(res), true);
                return;
            }
            auto q = new_query(domain, std::move(cb));
            q->phase = Query::Phase::RouteHost;
            q->route = *r;
            q->explain.push_back(line);
            launch_addrs(q, {ep.host});
            return;
        }

        auto q = new_query(domain, std::move(cb));
        q->phase = Query::Phase::Srv;
        q->pending += 2;
        for (int svc : {kXmpps, kXmpp}) {
            std::string name = kServices[svc] + domain;
            ares_query(channel, name.c_str(), 1 /* C_IN */, 33 /* T_SRV */, on_srv, new Op{this, q, svc, {}});
        }
        update_timer();
    }

    Query* new_query(const std::string& domain, Callback cb) {
        auto q = std::make_unique<Query>();
        q->domain = domain;
        q->cb = std::move(cb);
        Query* raw = q.get();
        queries.emplace(raw, std::move(q));
        return raw;
    }

    void launch_addrs(Query* q, const std::vector<std::string>& hosts) {
        // The extra count keeps a synchronous c-ares answer (IP literal,
        // /etc/hosts, immediate error) from completing the query while the
        // loop is still starting lookups.
        ++q->pending;
        for (const auto& h : hosts) {
            if (q->hosts.count(h)) continue;
            q->hosts.emplace(h, HostResult{});
            struct ares_addrinfo_hints hints {};
            hints.ai_family = AF_UNSPEC;
            hints.ai_socktype = SOCK_STREAM;
            ++q->pending;
            ares_getaddrinfo(channel, h.c_str(), nullptr, &hints, on_addr, new Op{this, q, kAddr, h});
        }
        --q->pending;
        if (q->pending == 0) {
            addrs_done(q);
            return;
        }
        update_timer();
    }

    static void on_srv(void* arg, int status, int /*timeouts*/, unsigned char* abuf, int alen) {
        std::unique_ptr<Op> op(static_cast<Op*>(arg));
        Impl* self = op->impl;
        Query* q = op->q;
        --q->pending;
        if (self->shut) return;
        int svc = op->kind;
        if (status == ARES_SUCCESS) {
            struct ares_srv_reply* reply = nullptr;
            int prc = ares_parse_srv_reply(abuf, alen, &reply);
            if (prc != ARES_SUCCESS) {
                status = prc;
            } else {
                int n = 0, dots = 0;
                for (auto* r = reply; r; r = r->next) {
                    ++n;
                    std::string host = r->host ? r->host : "";
                    if (host.empty() || host == ".") {
                        ++dots;
                        continue;
                    }
                    SrvRecord rec;
                    rec.target = strip_dot(lower(host));
                    rec.port = r->port;
                    rec.priority = r->priority;
                    rec.weight = r->weight;
                    rec.direct_tls = svc == kXmpps;
                    q->srv[svc].push_back(std::move(rec));
                }
                ares_free_data(reply);
                if (n == 0) status = ARES_ENODATA;
                else if (q->srv[svc].empty() && dots > 0) q->srv_dot[svc] = true;
            }
        }
        q->srv_status[svc] = status;
        if (q->pending == 0) self->srv_done(q);
    }

    void srv_done(Query* q) {
        std::vector<SrvRecord> usable;
        int error = ARES_SUCCESS;
        for (int svc : {kXmpps, kXmpp}) {
            std::string name = kServices[svc] + q->domain;
            int st = q->srv_status[svc];
            if (st != ARES_SUCCESS) {
                q->explain.push_back("SRV " + name + ": " + describe(st));
                if (!is_absent(st) && error == ARES_SUCCESS) error = st;
                if (st == ARES_ETIMEOUT) error = st; // the most telling failure
                continue;
            }
            if (q->srv_dot[svc]) {
                q->explain.push_back("SRV " + name + ": \".\" (service explicitly unavailable)");
                continue;
            }
            std::vector<std::string> parts;
            for (const auto& r : q->srv[svc]) {
                if (r.port == 0) {
                    parts.push_back(r.target + ":0 (ignored: port 0)");
                    continue;
                }
                parts.push_back(r.target + ":" + std::to_string(r.port) + " priority " + std::to_string(r.priority) +
                                " weight " + std::to_string(r.weight));
                usable.push_back(r);
            }
            q->explain.push_back("SRV " + name + ": " + join(parts, ", "));
        }

        if (!usable.empty()) {
            q->phase = Query::Phase::Addr;
            q->ordered = order_srv(std::move(usable), rnd);
            std::vector<std::string> parts, hosts;
            for (const auto& r : q->ordered) {
                parts.push_back(r.target + ":" + std::to_string(r.port) + (r.direct_tls ? " (direct TLS)" : " (STARTTLS)"));
                hosts.push_back(r.target);
            }
            q->explain.push_back("SRV order: " + join(parts, ", "));
            launch_addrs(q, hosts);
            return;
        }
        if (error != ARES_SUCCESS) {
            fail(q, describe(error));
            return;
        }
        // RFC 6120 §3.2.1: "." for _xmpp-server means no fallback. A "." for
        // _xmpps-server only rules out direct TLS; the A/AAAA fallback is the
        // STARTTLS service, so it still applies when _xmpp-server is absent.
        if (q->srv_dot[kXmpp]) {
            fail(q, "service explicitly unavailable (SRV '.')");
            return;
        }
        if (!q->srv[kXmpps].empty() || !q->srv[kXmpp].empty()) {
            fail(q, "no usable SRV records (port 0)");
            return;
        }
        q->phase = Query::Phase::Fallback;
        q->explain.push_back("no SRV records: A/AAAA " + q->domain + " port 5269");
        launch_addrs(q, {q->domain});
    }

    static void on_addr(void* arg, int status, int /*timeouts*/, struct ares_addrinfo* res) {
        std::unique_ptr<Op> op(static_cast<Op*>(arg));
        Impl* self = op->impl;
        Query* q = op->q;
        --q->pending;
        if (self->shut) {
            if (res) ares_freeaddrinfo(res);
            return;
        }
        HostResult& hr = q->hosts[op->host];
        hr.status = status;
        if (status == ARES_SUCCESS && res) {
            for (auto* n = res->nodes; n; n = n->ai_next) {
                char buf[INET6_ADDRSTRLEN] = {};
                if (n->ai_family == AF_INET && n->ai_addr)
                    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(n->ai_addr)->sin_addr, buf, sizeof buf);
                else if (n->ai_family == AF_INET6 && n->ai_addr)
                    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(n->ai_addr)->sin6_addr, buf, sizeof buf);
                else
                    continue;
                std::string a = buf;
                if (std::find(hr.addresses.begin(), hr.addresses.end(), a) == hr.addresses.end())
                    hr.addresses.push_back(std::move(a));
            }
            if (hr.addresses.empty()) hr.status = ARES_ENODATA;
        }
        if (res) ares_freeaddrinfo(res);
        if (q->pending == 0) self->addrs_done(q);
    }

    std::string host_line(const std::string& host, const HostResult& hr) const {
        if (hr.status == ARES_SUCCESS) return "A/AAAA " + host + ": " + join(hr.addresses, ", ");
        return "A/AAAA " + host + ": " + describe(hr.status);
    }

    void addrs_done(Query* q) {
        Resolution res;
        auto add = [&res](Target t) {
            for (const auto& e : res.targets)
                if (e.address == t.address && e.port == t.port && e.direct_tls == t.direct_tls) return;
            res.targets.push_back(std::move(t));
        };

        switch (q->phase) {
        case Query::Phase::RouteHost: {
            const RouteConfig& r = *q->route;
            const HostResult& hr = q->hosts[r.address.host];
            q->explain.push_back(host_line(r.address.host, hr));
            if (hr.status != ARES_SUCCESS) {
                fail(q, "route " + r.domain + " host " + r.address.host + ": " +
                            (is_absent(hr.status) ? "no A or AAAA records (" + describe(hr.status) + ")"
                                                  : describe(hr.status)));
                return;
            }
            for (const auto& a : hr.addresses) {
                Target t;
                t.address = a;
                t.port = r.address.port;
                t.direct_tls = r.direct_tls;
                t.host = r.address.host;
                t.source = "route " + r.domain;
                t.policy = r.policy;
                add(std::move(t));
            }
            break;
        }
        case Query::Phase::Fallback: {
            const HostResult& hr = q->hosts[q->domain];
            q->explain.push_back(host_line(q->domain, hr));
            if (hr.status != ARES_SUCCESS) {
                if (is_absent(hr.status))
                    fail(q, "no SRV, A or AAAA records (" + describe(hr.status) + ")");
                else
                    fail(q, describe(hr.status));
                return;
            }
            for (const auto& a : hr.addresses) {
                Target t;
                t.address = a;
                t.port = 5269;
                t.host = q->domain;
                t.source = "A/AAAA " + q->domain;
                add(std::move(t));
            }
            break;
        }
        case Query::Phase::Addr: {
            std::vector<std::string> seen, errors;
            for (const auto& r : q->ordered) {
                const HostResult& hr = q->hosts[r.target];
                if (std::find(seen.begin(), seen.end(), r.target) == seen.end()) {
                    seen.push_back(r.target);
                    q->explain.push_back(host_line(r.target, hr));
                    if (hr.status != ARES_SUCCESS) errors.push_back(r.target + ": " + describe(hr.status));
                }
                if (hr.status != ARES_SUCCESS) continue;
                for (const auto& a : hr.addresses) {
                    Target t;
                    t.address = a;
                    t.port = r.port;
                    t.direct_tls = r.direct_tls;
                    t.host = r.target;
                    t.source = std::string("SRV ") + kServices[r.direct_tls ? kXmpps : kXmpp] + q->domain;
                    add(std::move(t));
                }
            }
            if (res.targets.empty()) {
                fail(q, "no SRV target has an address (" + join(errors, "; ") + ")");
                return;
            }
            break;
        }
        case Query::Phase::Srv:
            fail(q, "internal error: address results in SRV phase");
            return;
        }
        res.explain = join(q->explain, "\n");
        finish(q, std::move(res));
    }

    // --- shutdown ----------------------------------------------------------------

    void shutdown() {
        if (shut) return;
        shut = true;
        // Every outstanding c-ares callback runs now with ARES_EDESTRUCTION;
        // they only count down (see `shut` checks), and sockets are closed
        // through sock_state_cb.
        if (channel) {
            ares_destroy(channel);
            channel = nullptr;
        }
        std::vector<std::pair<Callback, std::string>> cancelled;
        for (auto& [raw, q] : queries) {
            (void)raw;
            cancelled.emplace_back(std::move(q->cb), q->domain);
        }
        queries.clear();
        for (Deferred* d : deferred) {
            cancelled.emplace_back(std::move(d->cb), d->domain);
            d->impl = nullptr;
            uv_close(reinterpret_cast<uv_handle_t*>(&d->timer), on_deferred_closed);
        }
        deferred.clear();
        for (auto& [fd, p] : polls) {
            (void)fd;
            uv_close(reinterpret_cast<uv_handle_t*>(p), on_handle_closed_poll);
        }
        polls.clear();
        if (timer) {
            uv_close(reinterpret_cast<uv_handle_t*>(timer), on_handle_closed_timer);
            timer = nullptr;
        }
        for (auto& [cb, domain] : cancelled)
            if (cb) cb(make_error(domain + ": resolver shut down"));
    }
};

Resolver::Resolver(uv_loop_t* loop, std::vector<RouteConfig> routes, std::optional<Endpoint> nameserver)
    : Resolver(loop, std::move(routes), std::move(nameserver), ResolverOptions{}) {}

Resolver::Resolver(uv_loop_t* loop, std::vector<RouteConfig> routes, std::optional<Endpoint> nameserver,
                   ResolverOptions options)
    : impl_(std::make_unique<Impl>(loop, std::move(routes), std::move(nameserver), std::move(options))) {}

Resolver::~Resolver() {
    if (impl_) impl_->shutdown();
}

Result<void> Resolver::init() { return impl_->init(); }

void Resolver::resolve(const std::string& domain, Callback cb) { impl_->resolve(domain, std::move(cb)); }

void Resolver::set_routes(std::vector<RouteConfig> routes) { impl_->routes = std::move(routes); }

void Resolver::shutdown() { impl_->shutdown(); }

} // namespace s2smux::route
