#include "models/nsa_model.h"

#include <cmath>

#include "absl/strings/str_cat.h"
#include "kernels/common/status.h"
#include "kernels/reference/nsa_attention.h"
#include "kernels/reference/ops.h"
#include "models/dtype.h"

namespace nsa {

NsaModel::NsaModel(ModelConfig config, ModelWeights weights) : config_(std::move(config)), weights_(std::move(weights)) {}

absl::StatusOr<std::unique_ptr<NsaModel>> NsaModel::Load(const std::string& dir, bool progress) {
  ASSIGN_OR_RETURN(ModelConfig config, ModelConfig::FromFile(dir + "/config.json"));
  ASSIGN_OR_RETURN(ModelWeights weights, LoadWeights(dir, config, progress));
  return std::make_unique<NsaModel>(std::move(config), std::move(weights));
}

void NsaModel::Round(float* x, int64_t n) const {
  if (bf16_activations_) RoundToBFloat16(x, static_cast<size_t>(n));
}

namespace {

void RopeRows(float* x, int rows, int heads, int dim, int64_t first_position, double theta) {
  for (int r = 0; r < rows; ++r) ref::ApplyRope(x + int64_t{r} * heads * dim, heads, dim, first_position + r, theta);
}

}  // namespace

void NsaModel::Attention(int layer, const float* h, int n, KvStore& store, float* out) const {
  const ModelConfig& c = config_;
  const LayerWeights& W = weights_.layers[layer];
  const NsaParams& p = c.nsa;
  const int H = c.hidden_size, nh = c.num_heads, kvh = c.num_kv_heads, hd = c.head_dim, vhd = c.v_head_dim;
  const int64_t t0 = store.num_tokens();
  const bool per_branch = p.kv_sharing == KvSharing::kPerBranch;
  const bool linear = p.compress_fn == CompressFn::kLinear;

  auto bias = [](const std::vector<float>& b) { return b.empty() ? nullptr : b.data(); };
  auto project = [&](const std::vector<float>& w, const float* b, int out_dim) {
    std::vector<float> y(int64_t{n} * out_dim);
    ref::Linear(h, n, H, w.data(), out_dim, b, y.data());
    return y;
  };
  std::vector<float> q = project(W.q_proj, bias(W.q_bias), nh * hd);
  std::vector<float> gates = project(W.g_proj, nullptr, 3 * nh);
  for (float& g : gates) g = 1.0f / (1.0f + std::exp(-g));
  RopeRows(q.data(), n, nh, hd, t0, c.rope_theta);

  // New rows of every plane, [n][kvh][dim], then scattered into the store.
  std::vector<float> k = project(W.k_proj, bias(W.k_bias), kvh * hd);
  std::vector<float> v = project(W.v_proj, bias(W.v_bias), kvh * vhd);
  std::vector<float> k_win, v_win, k_src, v_src;
  if (per_branch) {
    k_win = project(W.k_win_proj, nullptr, kvh * hd);
    v_win = project(W.v_win_proj, nullptr, kvh * vhd);
    RopeRows(k_win.data(), n, kvh, hd, t0, c.rope_theta);
    k_src = project(W.k_cmp_proj, nullptr, kvh * hd);
    v_src = project(W.v_cmp_proj, nullptr, kvh * vhd);
    if (!linear) RopeRows(k_src.data(), n, kvh, hd, t0, c.rope_theta);
  } else if (linear) {
    k_src = k;  // linear compression reads the keys before RoPE
  }
  RopeRows(k.data(), n, kvh, hd, t0, c.rope_theta);
  for (std::vector<float>* rows : {&q, &k, &v, &k_win, &v_win, &k_src, &v_src}) Round(*rows);

  auto put = [&](KvPlane plane, bool value, const std::vector<float>& rows, int dim) {
    for (int g = 0; g < kvh; ++g) {
      const ref::RowSource dst = store.Rows(plane, layer, g, value);
      for (int i = 0; i < n; ++i) {
        const float* src = rows.data() + (int64_t{i} * kvh + g) * dim;
        std::copy(src, src + dim, dst.Mutable(t0 + i));
      }
    }
  };
  put(KvPlane::kSel, false, k, hd);
  put(KvPlane::kSel, true, v, vhd);
  if (per_branch) {
    put(KvPlane::kWin, false, k_win, hd);
    put(KvPlane::kWin, true, v_win, vhd);
    put(KvPlane::kSrc, true, v_src, vhd);
  }
  if (per_branch || linear) put(KvPlane::kSrc, false, k_src, hd);

  // Summaries of every compressed block that completes within this chunk.
  const int64_t have = p.NumCompressed(t0), want = p.NumCompressed(t0 + n);
  for (int64_t i = have; i < want; ++i) {
    const int64_t first = i * p.compress_stride;
    for (int g = 0; g < kvh; ++g) {
      float* dk = store.Rows(KvPlane::kCmp, layer, g, false).Mutable(i);
      float* dv = store.Rows(KvPlane::kCmp, layer, g, true).Mutable(i);
      const ref::RowSource src_k = CompressionInput(store, c, layer, g, false);
      const ref::RowSource src_v = CompressionInput(store, c, layer, g, true);
      if (linear) {
        const int64_t lk = int64_t{p.compress_block} * hd * hd, lv = int64_t{p.compress_block} * vhd * vhd;
        ref::CompressLinear(src_k, first, p.compress_block, hd, W.intra_block_pe.data() + int64_t{g} * p.compress_block * hd,
                            W.compress_key.data() + g * lk, hd, dk);
        ref::CompressLinear(src_v, first, p.compress_block, vhd, nullptr, W.compress_value.data() + g * lv, vhd, dv);
        ref::ApplyRope(dk, 1, hd, first, c.rope_theta);
      } else {
        ref::CompressMean(src_k, first, p.compress_block, hd, dk);
        ref::CompressMean(src_v, first, p.compress_block, vhd, dv);
      }
      Round(dk, hd);
      Round(dv, vhd);
    }
  }

  // Attention of each new query, one KV group at a time; query i sees positions <= t0 + i.
  const int G = c.group_size();
  const ref::NsaDims dims{G, hd, vhd, 1.0f / std::sqrt(static_cast<float>(hd))};
#pragma omp parallel for collapse(2) schedule(dynamic) if (n >= 8)
  for (int i = 0; i < n; ++i) {
    for (int g = 0; g < kvh; ++g) {
      const int64_t head0 = int64_t{i} * nh + int64_t{g} * G;
      ref::NsaAttendGroup(p, dims, q.data() + head0 * hd, gates.data() + head0 * 3, t0 + i, HeadView(store, c, layer, g),
                          out + head0 * vhd);
    }
  }
}

std::vector<float> NsaModel::Forward(std::span<const int> tokens, KvStore& store, std::vector<float>* all_logits,
                                     bool want_logits) const {
  const ModelConfig& c = config_;
  const int n = static_cast<int>(tokens.size());
  const int H = c.hidden_size, M = c.intermediate_size, V = c.vocab_size;
  store.Prepare(n);
  std::vector<float> x(int64_t{n} * H), h(int64_t{n} * H);
  for (int i = 0; i < n; ++i) {
    const float* e = weights_.embeddings.data() + int64_t{tokens[i]} * H;
    std::copy(e, e + H, x.data() + int64_t{i} * H);
  }
  std::vector<float> attn(int64_t{n} * c.num_heads * c.v_head_dim), proj(int64_t{n} * H);
  std::vector<float> gate(int64_t{n} * M), up(int64_t{n} * M);
  for (int layer = 0; layer < c.num_layers; ++layer) {
    const LayerWeights& W = weights_.layers[layer];
    ref::RmsNorm(x.data(), n, H, W.attn_norm.data(), c.norm_eps, h.data());
    Round(h);
    Attention(layer, h.data(), n, store, attn.data());
    Round(attn);
    ref::Linear(attn.data(), n, c.num_heads * c.v_head_dim, W.o_proj.data(), H, nullptr, proj.data());
    for (size_t j = 0; j < x.size(); ++j) x[j] += proj[j];

    ref::RmsNorm(x.data(), n, H, W.mlp_norm.data(), c.norm_eps, h.data());
    Round(h);
    ref::Linear(h.data(), n, H, W.gate_proj.data(), M, nullptr, gate.data());
    ref::Linear(h.data(), n, H, W.up_proj.data(), M, nullptr, up.data());
    ref::SiluMul(gate.data(), up.data(), int64_t{n} * M, gate.data());
    Round(gate);
    ref::Linear(gate.data(), n, M, W.down_proj.data(), H, nullptr, proj.data());
    for (size_t j = 0; j < x.size(); ++j) x[j] += proj[j];
  }
  store.Commit(n);
  if (!want_logits && all_logits == nullptr) return {};

  ref::RmsNorm(x.data(), n, H, weights_.norm.data(), c.norm_eps, h.data());
  Round(h);
  const float* out_w = weights_.output_matrix().data();
  if (all_logits != nullptr) {
    all_logits->resize(int64_t{n} * V);
    ref::Linear(h.data(), n, H, out_w, V, nullptr, all_logits->data());
    return std::vector<float>(all_logits->end() - V, all_logits->end());
  }
  std::vector<float> logits(V);
  ref::Linear(h.data() + int64_t{n - 1} * H, 1, H, out_w, V, nullptr, logits.data());
  return logits;
}

}  // namespace nsa
