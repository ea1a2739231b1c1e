// Routed LoRA for the multi-adapter engine (inference only): the tokens of one step name different
// LoRA adapters, each with its own A (r × in) and B (out × r), so unlike VeRA nothing is shared.
// One call per layer adds every adapter's delta to its own tokens, y[t] += s·B·(A·x[t]), instead of
// a gather, two products, a scale and a scatter per adapter: with one token per adapter those were
// five kernel calls of a few microseconds each, per adapter, per layer. Work is split by token;
// each token's row is computed by one thread in a fixed order, so results do not depend on the
// thread count. Same semantics as the TypeScript reference (src/backends/ts/index.ts).
#include <algorithm>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels.h"
#include "thread_pool.h"
#include "vec.h"

namespace vera {
namespace {

// loraRoutedForward(x, y, in, out, As, Bs, ranks, scalings, starts, rows)
// Group g's tokens are rows[starts[g] .. starts[g + 1]); each token appears at most once.
napi_value k_lora_routed_forward(napi_env, const Args& a) {
  size_t nx, ny, nr;
  const float* x = a.f32(0, &nx);
  float* y = a.f32(1, &ny);
  const int64_t in = a.dim(2), out = a.dim(3);
  std::vector<size_t> aLen, bLen;
  const std::vector<float*> As = a.f32list(4, &aLen);
  const std::vector<float*> Bs = a.f32list(5, &bLen);
  const std::vector<int64_t> ranks = a.ints(6);
  const std::vector<double> scalings = a.nums(7);
  const std::vector<int64_t> starts = a.ints(8);
  const int32_t* rows = a.i32(9, &nr);
  const size_t groups = As.size();
  const auto fail = [](const std::string& what) { throw std::runtime_error("loraRoutedForward: " + what); };
  // the addon must never read or write outside its buffers, whatever the caller passed
  if (in <= 0 || out <= 0) fail("bad dimensions");
  if (Bs.size() != groups || ranks.size() != groups || scalings.size() != groups || starts.size() != groups + 1)
    fail("A, B, ranks and scalings need one entry per group and starts one more");
  const int64_t tokens = int64_t(nx) / in;
  if (double(ny) < double(tokens) * out) fail("y is smaller than x's rows × out");
  if (starts[0] != 0 || starts[groups] != int64_t(nr)) fail("starts must run from 0 to the number of rows");
  int64_t maxRank = 0;
  for (size_t g = 0; g < groups; g++) {
    const int64_t r = ranks[g];
    if (r <= 0 || starts[g + 1] < starts[g]) fail("group " + std::to_string(g) + ": bad rank or starts");
    if (double(aLen[g]) < double(r) * in || double(bLen[g]) < double(out) * r) fail("group " + std::to_string(g) + ": A or B is smaller than r × in / out × r");
    maxRank = std::max(maxRank, r);
  }
  // rows are read once, here: the loop below uses the checked copies (a shared buffer could change)
  std::vector<int32_t> groupOf(nr), token(nr);
  std::vector<char> seen(size_t(tokens), 0);
  for (size_t g = 0; g < groups; g++)
    for (int64_t i = starts[g]; i < starts[g + 1]; i++) {
      const int32_t t = rows[i];
      if (t < 0 || t >= tokens) fail("row " + std::to_string(t) + " is outside x's " + std::to_string(tokens) + " rows");
      if (seen[size_t(t)]) fail("row " + std::to_string(t) + " is in two groups (or twice in one)");
      seen[size_t(t)] = 1;
      groupOf[size_t(i)] = int32_t(g);
      token[size_t(i)] = t;
    }
  // a token's delta is r·(in + out) multiply-adds: chunks of at least ~64K of them
  const int64_t perToken = std::max<int64_t>(1, maxRank * (in + out));
  parallel_for(int64_t(nr), std::max<int64_t>(1, 65536 / perToken), [&](int64_t i0, int64_t i1) {
    std::vector<float> z(static_cast<size_t>(maxRank));
    for (int64_t i = i0; i < i1; i++) {
      const size_t g = size_t(groupOf[size_t(i)]);
      const int64_t r = ranks[g], t = token[size_t(i)];
      const float* xt = x + t * in;
      const float* A = As[g];
      const float* B = Bs[g];
      const float s = float(scalings[g]);
      for (int64_t j = 0; j < r; j++) z[size_t(j)] = dot(A + j * in, xt, in);
      float* yt = y + t * out;
      for (int64_t o = 0; o < out; o++) yt[o] += s * dot(B + o * r, z.data(), r);
    }
  });
  return nullptr;
}

}  // namespace

const BindingEntry kLoraBindings[] = {
    {"loraRoutedForward", k_lora_routed_forward},
    {nullptr, nullptr},
};

}  // namespace vera
