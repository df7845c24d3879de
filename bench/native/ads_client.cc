// Simulated Envoy ADS clients in native code, for bench/fleet_scale.py.
//
// The bench's Python clients (bench/_fanout_client.py) spend more CPU per node and push
// than the control plane they measure, on the same two cores. Deployed, each Envoy runs on
// its own machine; this client does what they do on the wire for a fraction of the CPU, so
// the bench measures the control plane rather than its simulated fleet.
//
// Each node is its own channel (its own TCP connection) and one SotW ADS stream, and asks
// the way Envoy does: CDS wildcard, then EDS for the EDS clusters it got, then LDS
// wildcard, then RDS for the route names its listeners' HTTP connection managers
// reference. It ACKs every response with the response's version and nonce.
//
// usage: ads_client TARGET FIRST STEP COUNT STOP_AFTER_S
//   runs nodes FIRST, FIRST+STEP, ... (COUNT of them), node ids "node-%05d";
//   prints "started COUNT" once every stream is started, then runs until standard input
//   ends (or reads "stop") or STOP_AFTER_S pass; prints "done RESPONSES FAILURES" and exits.

#include <grpcpp/generic/generic_stub.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/support/byte_buffer.h>
#include <sys/resource.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

namespace {

const char kMethod[] = "/envoy.service.discovery.v3.AggregatedDiscoveryService/StreamAggregatedResources";
const char kPrefix[] = "type.googleapis.com/envoy.config.";
const std::string kCds = std::string(kPrefix) + "cluster.v3.Cluster";
const std::string kEds = std::string(kPrefix) + "endpoint.v3.ClusterLoadAssignment";
const std::string kLds = std::string(kPrefix) + "listener.v3.Listener";
const std::string kRds = std::string(kPrefix) + "route.v3.RouteConfiguration";
constexpr uint64_t kClusterTypeEds = 3;

std::atomic<uint64_t> g_responses{0};
std::atomic<uint64_t> g_failures{0};

// ------------------------------------------------------------------ protobuf wire format

void PutVarint(std::string& out, uint64_t v) {
  while (v >= 0x80) {
    out.push_back(static_cast<char>(v | 0x80));
    v >>= 7;
  }
  out.push_back(static_cast<char>(v));
}

void PutBytes(std::string& out, uint32_t field, std::string_view value) {
  PutVarint(out, (field << 3) | 2);
  PutVarint(out, value.size());
  out.append(value);
}

// One field of a message: its number, wire type, and its varint or length-delimited value.
struct Field {
  uint32_t number = 0;
  uint32_t wire = 0;
  uint64_t varint = 0;
  std::string_view bytes;
};

// Reads a message's fields in order; a malformed message ends the walk and sets `bad`.
class Reader {
 public:
  explicit Reader(std::string_view data) : p_(data.data()), end_(data.data() + data.size()) {}

  bool Next(Field& f) {
    if (p_ >= end_) return false;
    uint64_t tag;
    if (!Varint(tag)) return Fail();
    f.number = static_cast<uint32_t>(tag >> 3);
    f.wire = static_cast<uint32_t>(tag & 7);
    f.bytes = {};
    switch (f.wire) {
      case 0:
        return Varint(f.varint) || Fail();
      case 1:
        return Skip(8);
      case 2: {
        uint64_t len;
        if (!Varint(len) || len > static_cast<uint64_t>(end_ - p_)) return Fail();
        f.bytes = std::string_view(p_, len);
        p_ += len;
        return true;
      }
      case 5:
        return Skip(4);
      default:
        return Fail();
    }
  }

  bool bad = false;

 private:
  bool Varint(uint64_t& v) {
    v = 0;
    for (int shift = 0; shift < 64 && p_ < end_; shift += 7) {
      uint8_t b = static_cast<uint8_t>(*p_++);
      v |= static_cast<uint64_t>(b & 0x7f) << shift;
      if (b < 0x80) return true;
    }
    return false;
  }
  bool Skip(size_t n) {
    if (static_cast<size_t>(end_ - p_) < n) return Fail();
    p_ += n;
    return true;
  }
  bool Fail() {
    bad = true;
    p_ = end_;
    return false;
  }
  const char* p_;
  const char* end_;
};

// The value of every length-delimited field `number` of a message.
std::vector<std::string_view> Repeated(std::string_view message, uint32_t number) {
  std::vector<std::string_view> out;
  Reader r(message);
  Field f;
  while (r.Next(f)) {
    if (f.number == number && f.wire == 2) out.push_back(f.bytes);
  }
  return out;
}

std::string_view First(std::string_view message, uint32_t number) {
  auto all = Repeated(message, number);
  return all.empty() ? std::string_view() : all.back();
}

bool EndsWith(std::string_view s, std::string_view tail) {
  return s.size() >= tail.size() && s.substr(s.size() - tail.size()) == tail;
}

// DiscoveryResponse: version_info 1, resources 2 (Any: type_url 1, value 2), type_url 4,
// nonce 5.
struct Response {
  std::string version, type_url, nonce;
  std::vector<std::string_view> resources;  // the Any values
};

Response Parse(std::string_view body) {
  Response out;
  Reader r(body);
  Field f;
  while (r.Next(f)) {
    if (f.wire != 2) continue;
    if (f.number == 1) out.version.assign(f.bytes);
    if (f.number == 2) out.resources.push_back(First(f.bytes, 2));
    if (f.number == 4) out.type_url.assign(f.bytes);
    if (f.number == 5) out.nonce.assign(f.bytes);
  }
  return out;
}

// Cluster: name 1, type 2 (EDS = 3). The names Envoy asks EDS for.
std::vector<std::string> EdsNames(const Response& response) {
  std::set<std::string> names;
  for (auto cluster : response.resources) {
    Reader r(cluster);
    Field f;
    std::string_view name;
    uint64_t type = 0;
    while (r.Next(f)) {
      if (f.number == 1 && f.wire == 2) name = f.bytes;
      if (f.number == 2 && f.wire == 0) type = f.varint;
    }
    if (type == kClusterTypeEds) names.emplace(name);
  }
  return {names.begin(), names.end()};
}

// Listener.filter_chains 3 -> FilterChain.filters 3 -> Filter.typed_config 4 (Any) ->
// HttpConnectionManager.rds 3 -> Rds.route_config_name 2.
std::vector<std::string> RouteNames(const Response& response) {
  std::set<std::string> names;
  for (auto listener : response.resources) {
    for (auto chain : Repeated(listener, 3)) {
      for (auto filter : Repeated(chain, 3)) {
        for (auto config : Repeated(filter, 4)) {
          if (!EndsWith(First(config, 1), "HttpConnectionManager")) continue;
          for (auto rds : Repeated(First(config, 2), 3)) {
            for (auto name : Repeated(rds, 2)) names.emplace(name);
          }
        }
      }
    }
  }
  return {names.begin(), names.end()};
}

// ------------------------------------------------------------------ one simulated node

class Node : public grpc::ClientBidiReactor<grpc::ByteBuffer, grpc::ByteBuffer> {
 public:
  Node(std::shared_ptr<grpc::Channel> channel, std::string id)
      : channel_(std::move(channel)), stub_(channel_), id_(std::move(id)) {}

  void Start() {
    context_.set_wait_for_ready(true);
    stub_.PrepareBidiStreamingCall(&context_, kMethod, grpc::StubOptions(), this);
    Request(kCds, {}, true);
    StartRead(&in_);
    StartCall();
  }

  void Cancel() { context_.TryCancel(); }

  void Wait() {
    std::unique_lock<std::mutex> lock(mu_);
    done_cv_.wait_for(lock, std::chrono::seconds(5), [this] { return done_; });
  }

  void OnReadDone(bool ok) override {
    if (!ok) return;  // the stream is over; OnDone follows
    grpc::Slice slice;
    if (!in_.DumpToSingleSlice(&slice).ok()) return;
    std::string_view body(reinterpret_cast<const char*>(slice.begin()), slice.size());
    Response response = Parse(body);
    g_responses.fetch_add(1, std::memory_order_relaxed);
    const std::string& type = response.type_url;
    last_[type] = {response.version, response.nonce};
    bool follow = false;
    std::string follow_type;
    std::vector<std::string> follow_names;
    if (type == kCds) {
      follow_names = EdsNames(response);
      follow = names_.find(kEds) == names_.end() || names_[kEds] != follow_names;
      follow_type = kEds;
    } else if (type == kEds && names_.find(kLds) == names_.end()) {
      follow = true;
      follow_type = kLds;
    } else if (type == kLds) {
      follow_names = RouteNames(response);
      follow = names_.find(kRds) == names_.end() || names_[kRds] != follow_names;
      follow_type = kRds;
    }
    Request(type, names_[type], false);
    if (follow) Request(follow_type, follow_names, false);
    in_.Clear();
    StartRead(&in_);
  }

  // Writes start outside the lock: gRPC may run a reaction on the thread that starts an
  // operation. A deque keeps the buffer being written in place while others are queued.
  void OnWriteDone(bool ok) override {
    grpc::ByteBuffer* next = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      out_.pop_front();
      if (!out_.empty()) next = &out_.front();
    }
    if (ok && next != nullptr) StartWrite(next);
  }

  void OnDone(const grpc::Status& status) override {
    if (!status.ok() && status.error_code() != grpc::StatusCode::CANCELLED) {
      g_failures.fetch_add(1, std::memory_order_relaxed);
      std::fprintf(stderr, "%s: stream ended: %d %s\n", id_.c_str(), status.error_code(),
                   status.error_message().c_str());
    }
    std::lock_guard<std::mutex> lock(mu_);
    done_ = true;
    done_cv_.notify_all();
  }

 private:
  // DiscoveryRequest: version_info 1, node 2 (Node: id 1, cluster 2), resource_names 3,
  // type_url 4, response_nonce 5.
  void Request(const std::string& type, const std::vector<std::string>& names, bool first) {
    names_[type] = names;
    std::string out;
    auto last = last_.find(type);
    if (last != last_.end() && !last->second.first.empty()) PutBytes(out, 1, last->second.first);
    if (first) {
      std::string node;
      PutBytes(node, 1, id_);
      PutBytes(node, 2, "group-00");
      PutBytes(out, 2, node);
    }
    for (const auto& name : names) PutBytes(out, 3, name);
    PutBytes(out, 4, type);
    if (last != last_.end() && !last->second.second.empty()) PutBytes(out, 5, last->second.second);
    grpc::Slice slice(out);
    grpc::ByteBuffer* first_in_line = nullptr;
    {
      std::lock_guard<std::mutex> lock(mu_);
      out_.emplace_back(&slice, 1);
      if (out_.size() == 1) first_in_line = &out_.front();
    }
    if (first_in_line != nullptr) StartWrite(first_in_line);
  }

  std::shared_ptr<grpc::Channel> channel_;
  grpc::GenericStub stub_;
  grpc::ClientContext context_;
  std::string id_;
  grpc::ByteBuffer in_;
  // Read side (one read outstanding at a time): what was asked and received per type.
  std::map<std::string, std::vector<std::string>> names_;
  std::map<std::string, std::pair<std::string, std::string>> last_;
  // Write side: at most one write outstanding; the rest wait here.
  std::mutex mu_;
  std::deque<grpc::ByteBuffer> out_;
  std::condition_variable done_cv_;
  bool done_ = false;
};

void RaiseFileLimit() {
  rlimit limit;
  if (getrlimit(RLIMIT_NOFILE, &limit) == 0 && limit.rlim_cur < limit.rlim_max) {
    limit.rlim_cur = limit.rlim_max;
    setrlimit(RLIMIT_NOFILE, &limit);
  }
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 6) {
    std::fprintf(stderr, "usage: %s TARGET FIRST STEP COUNT STOP_AFTER_S\n", argv[0]);
    return 2;
  }
  const std::string target = argv[1];
  const long first = std::stol(argv[2]), step = std::stol(argv[3]), count = std::stol(argv[4]);
  const double stop_after_s = std::stod(argv[5]);
  if (first < 0 || step < 1 || count < 0 || stop_after_s <= 0) {
    std::fprintf(stderr, "FIRST >= 0, STEP >= 1, COUNT >= 0, STOP_AFTER_S > 0\n");
    return 2;
  }
  RaiseFileLimit();

  std::vector<std::unique_ptr<Node>> nodes;
  nodes.reserve(count);
  for (long i = 0; i < count; ++i) {
    grpc::ChannelArguments args;
    // Each node its own TCP connection, as each Envoy is (the global subchannel pool
    // would share one connection between channels with equal arguments).
    args.SetInt("grpc.use_local_subchannel_pool", 1);
    args.SetMaxReceiveMessageSize(-1);
    auto channel = grpc::CreateCustomChannel(target, grpc::InsecureChannelCredentials(), args);
    char id[32];
    std::snprintf(id, sizeof id, "node-%05ld", first + i * step);
    nodes.push_back(std::make_unique<Node>(std::move(channel), id));
    nodes.back()->Start();
  }
  std::printf("started %ld\n", count);
  std::fflush(stdout);

  // Standard input ending (or "stop") ends the run; so does the deadline.
  std::mutex mu;
  std::condition_variable cv;
  bool stop = false;
  std::thread watcher([&] {
    std::string line;
    while (std::getline(std::cin, line) && line != "stop") {
    }
    std::lock_guard<std::mutex> lock(mu);
    stop = true;
    cv.notify_all();
  });
  watcher.detach();
  {
    std::unique_lock<std::mutex> lock(mu);
    cv.wait_for(lock, std::chrono::duration<double>(stop_after_s), [&] { return stop; });
  }
  for (auto& node : nodes) node->Cancel();
  for (auto& node : nodes) node->Wait();
  std::printf("done %llu %llu\n", static_cast<unsigned long long>(g_responses.load()),
              static_cast<unsigned long long>(g_failures.load()));
  std::fflush(stdout);
  std::_Exit(0);
}
