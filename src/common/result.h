// Result<T>: value or error string, for code paths that must not throw.
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace s2smux {

struct Error {
    std::string message;
};

template <class T>
class Result {
public:
    Result(T value) : v_(std::move(value)) {}
    Result(Error err) : v_(std::move(err)) {}

    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }

    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T& operator*() { return value(); }
    const T& operator*() const { return value(); }
    T* operator->() { return &value(); }
    const T* operator->() const { return &value(); }

    const std::string& error() const { return std::get<1>(v_).message; }

private:
    std::variant<T, Error> v_;
};

template <>
class Result<void> {
public:
    Result() = default;
    Result(Error err) : err_(std::move(err)) {}

    bool ok() const { return !err_; }
    explicit operator bool() const { return ok(); }
    const std::string& error() const { return err_->message; }

private:
    std::optional<Error> err_;
};

inline Error make_error(std::string msg) { return Error{std::move(msg)}; }

} // namespace s2smux
