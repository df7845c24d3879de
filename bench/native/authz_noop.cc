// An ext_authz gRPC server in native code that allows every request without looking at
// it, for bench/authz_floor.py: what Envoy's ext_authz call costs when the server's own
// work is as small as gRPC's C++ library makes it (the floor under any native decision
// path), beside a Python server that does the same nothing.
//
// It answers /envoy.service.auth.v3.Authorization/Check with a CheckResponse of status
// OK and an empty ok_response, whatever the request holds; any other method gets
// UNIMPLEMENTED. It never decides anything: it is a measuring stick, not an authz server.
//
// usage: authz_noop   (binds 127.0.0.1 on a free port, prints "port N", serves until
//                      standard input ends)

#include <grpcpp/generic/async_generic_service.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>

#include <cstdio>
#include <iostream>
#include <memory>
#include <string>

namespace {

const char kCheck[] = "/envoy.service.auth.v3.Authorization/Check";
// CheckResponse: status 1 (google.rpc.Status, code 0: empty), ok_response 3 (empty).
const char kAllow[] = {0x0a, 0x00, 0x1a, 0x00};

class Allow : public grpc::ServerGenericBidiReactor {
 public:
  explicit Allow(bool known) : known_(known) {
    if (!known_) {
      Finish(grpc::Status(grpc::StatusCode::UNIMPLEMENTED, "only Check is served"));
      return;
    }
    StartRead(&request_);
  }

  void OnReadDone(bool ok) override {
    if (!ok) {
      Finish(grpc::Status(grpc::StatusCode::INVALID_ARGUMENT, "no request"));
      return;
    }
    grpc::Slice slice(kAllow, sizeof kAllow);
    response_ = grpc::ByteBuffer(&slice, 1);
    StartWriteAndFinish(&response_, grpc::WriteOptions(), grpc::Status::OK);
  }

  void OnDone() override { delete this; }

 private:
  bool known_;
  grpc::ByteBuffer request_;
  grpc::ByteBuffer response_;
};

class Service : public grpc::CallbackGenericService {
  grpc::ServerGenericBidiReactor* CreateReactor(
      grpc::GenericCallbackServerContext* context) override {
    return new Allow(context->method() == kCheck);
  }
};

}  // namespace

int main() {
  Service service;
  int port = 0;
  grpc::ServerBuilder builder;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterCallbackGenericService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (server == nullptr || port == 0) {
    std::fprintf(stderr, "could not listen on 127.0.0.1\n");
    return 1;
  }
  std::printf("port %d\n", port);
  std::fflush(stdout);
  std::string line;
  while (std::getline(std::cin, line)) {
  }
  server->Shutdown();
  return 0;
}
