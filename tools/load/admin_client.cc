#include "tools/load/admin_client.h"

#include <fmt/format.h>

#include <memory>

namespace s2smux::load {

namespace {
struct WriteReq {
    uv_write_t req{};
    std::string data;
};
} // namespace

void AdminClient::connect(const std::string& path, OnStatus status) {
    status_ = std::move(status);
    uv_pipe_init(loop_, &pipe_, 0);
    pipe_.data = this;
    open_ = true;
    creq_.data = this;
    uv_pipe_connect(&creq_, &pipe_, path.c_str(), on_connect);
}

void AdminClient::on_connect(uv_connect_t* req, int status) {
    auto* c = static_cast<AdminClient*>(req->data);
    if (c->closing_) return;
    if (status != 0) {
        c->failed(fmt::format("cannot connect to the admin socket: {}", uv_strerror(status)));
        return;
    }
    c->connected_ = true;
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->pipe_), alloc_cb, read_cb);
    if (!c->early_.empty()) c->write(std::move(c->early_));
    if (c->status_) c->status_("");
}

void AdminClient::alloc_cb(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* c = static_cast<AdminClient*>(h->data);
    *buf = uv_buf_init(c->rbuf_, sizeof c->rbuf_);
}

void AdminClient::read_cb(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* c = static_cast<AdminClient*>(s->data);
    if (c->closing_) return;
    if (n == UV_EOF && c->waiting_.empty()) {
        c->close(); // the daemon closes idle connections (after 60 s): not an error
        return;
    }
    if (n < 0) {
        c->failed(n == UV_EOF ? std::string("admin socket closed by s2smuxd with replies outstanding")
                              : fmt::format("admin socket read: {}", uv_strerror(static_cast<int>(n))));
        return;
    }
    if (n == 0) return;
    const std::uint64_t t = uv_hrtime();
    c->reader_.feed(std::string_view(buf->base, static_cast<std::size_t>(n)));
    if (c->reader_.failed()) {
        c->failed("admin reply: " + c->reader_.error());
        return;
    }
    while (auto r = c->reader_.next()) {
        if (c->waiting_.empty()) {
            c->failed("admin socket: a reply nobody asked for");
            return;
        }
        OnReply cb = std::move(c->waiting_.front());
        c->waiting_.pop_front();
        if (cb) cb(*r, t);
        if (c->closing_) return;
    }
}

void AdminClient::send(const std::vector<std::string>& lines, const OnReply& on_reply) {
    if (!open_ || closing_) {
        if (status_) status_("admin socket: not connected");
        return;
    }
    std::string data;
    for (const auto& l : lines) {
        data += l;
        data += '\n';
        waiting_.push_back(on_reply);
    }
    if (!connected_) early_ += data; // written once connected
    else write(std::move(data));
}

void AdminClient::write(std::string data) {
    auto* w = new WriteReq{};
    w->req.data = w;
    w->data = std::move(data);
    uv_buf_t b = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(&pipe_), &b, 1, [](uv_write_t* req, int st) {
        std::unique_ptr<WriteReq> wr(static_cast<WriteReq*>(req->data));
        auto* c = static_cast<AdminClient*>(req->handle->data);
        if (st < 0 && !c->closing_) c->failed(fmt::format("admin socket write: {}", uv_strerror(st)));
    });
    if (rc != 0) {
        delete w;
        failed(fmt::format("admin socket write: {}", uv_strerror(rc)));
    }
}

void AdminClient::failed(std::string why) {
    OnStatus st = status_;
    close();
    if (st) st(why.empty() ? std::string("admin socket error") : why);
}

void AdminClient::close() {
    if (closing_) return;
    closing_ = true;
    connected_ = false;
    waiting_.clear();
    if (open_) uv_close(reinterpret_cast<uv_handle_t*>(&pipe_), nullptr);
}

} // namespace s2smux::load
