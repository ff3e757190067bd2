// Conversions between nsa.v1 messages and the engine's native types, and from absl::Status to
// grpc::Status: the one place where wire formats meet the engine.
#pragma once

#include <optional>

#include <grpcpp/grpcpp.h>

#include "absl/status/status.h"
#include "engine/engine.h"
#include "nsa/v1/generate.pb.h"

namespace nsa {

grpc::Status ToGrpc(const absl::Status& status);
// Validates what the proto alone can tell (unsupported options); the engine checks the rest.
absl::Status FromProto(const v1::GenerateRequest& in, std::optional<Clock::time_point> deadline, Request* out);
void ToProto(const Delta& delta, v1::Delta* out);
void ToProto(const Final& final, v1::Final* out);
v1::FinishReason ToProto(FinishReason reason);

// The other direction, for the gateway that forwards to engine servers.
void ToProto(const Request& request, v1::GenerateRequest* out);
Event FromProto(const v1::GenerateResponse& response);
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace nsa
