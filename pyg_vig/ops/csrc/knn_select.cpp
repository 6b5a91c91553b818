// Exact k-NN selection over one chunk of the dense distance matrix (CPU).
//
// Input: the raw batched product dot = q @ k^T (B, n, m), the squared norms q_sq (B, n, 1) and
// k_sq (B, 1, m), and an optional additive bias (n, m). Every distance is evaluated with the same
// float operations, in the same order, as the pure-torch path of pyg_vig/nn/graph.py
//
//     d = (((dot * -2) + q_sq) + k_sq) + bias        (each step rounded to the tensor dtype)
//
// so the distances are bit-identical, and the kd smallest are returned nearest first, as
// torch.topk(-d, kd).indices would give them. No distance tensor is written: each row is
// evaluated into a small per-thread buffer and selected there.
//
// Selection: a sorted list of the kd best (value, index) pairs, filled by insertion from a short
// list of candidates (see select_row). Without exact ties the result is unique, so it is the one
// torch.topk gives. A row with an exact tie
// that matters (two selected values equal, or the kd-th value shared with an unselected one) or
// with a NaN replays torch.topk's own CPU algorithm (ATen/native/TopKImpl.h: std::partial_sort
// when 64 * kd <= m, otherwise std::nth_element + std::sort of the first kd - 1, with NaN ranked
// above every number) on that row, which reproduces torch's order of tied indices as well.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pyg_vig {
namespace {

// Arithmetic type of one elementwise torch op on CPU: reduced floats are computed in float and
// rounded back after every op; float and double are computed natively.
template <typename T>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};

// Round an op result back to the tensor dtype (a no-op for float and double).
template <typename T, typename V>
inline V round_to(V v) {
  return static_cast<V>(static_cast<T>(v));
}

// Evaluate one row of distances into buf[0, m); returns whether the row holds a NaN.
template <typename T, typename V>
inline bool row_distances(const T* dot, V q_sq, const T* k_sq, const T* bias, int64_t m, V* buf) {
  bool nan = false;
  if (bias != nullptr) {
    for (int64_t j = 0; j < m; ++j) {
      V d = round_to<T>(static_cast<V>(dot[j]) * V(-2));
      d = round_to<T>(d + q_sq);
      d = round_to<T>(d + static_cast<V>(k_sq[j]));
      d = round_to<T>(d + static_cast<V>(bias[j]));
      nan |= d != d;
      buf[j] = d;
    }
  } else {
    for (int64_t j = 0; j < m; ++j) {
      V d = round_to<T>(static_cast<V>(dot[j]) * V(-2));
      d = round_to<T>(d + q_sq);
      d = round_to<T>(d + static_cast<V>(k_sq[j]));
      nan |= d != d;
      buf[j] = d;
    }
  }
  return nan;
}

// Insert d[j] for the candidates j of `cand` (ascending) into the sorted list (val, idx) of the
// kd best, which starts empty: the kd smallest, ascending, equal values in index order. The
// insertions are branchy; the callers keep the number of candidates small.
template <typename V, typename Cand>
inline V insert_candidates(const V* d, int64_t kd, V* val, int64_t* idx, int64_t count,
                           const Cand& cand) {
  for (int64_t q = 0; q < kd; ++q) {
    const int64_t j = cand(q);
    const V v = d[j];
    int64_t p = q;
    while (p > 0 && val[p - 1] > v) {
      val[p] = val[p - 1];
      idx[p] = idx[p - 1];
      --p;
    }
    val[p] = v;
    idx[p] = j;
  }
  V worst = val[kd - 1];
  for (int64_t q = kd; q < count; ++q) {
    const int64_t j = cand(q);
    const V v = d[j];
    if (v < worst) {
      int64_t p = kd - 1;
      while (p > 0 && val[p - 1] > v) {
        val[p] = val[p - 1];
        idx[p] = idx[p - 1];
        --p;
      }
      val[p] = v;
      idx[p] = j;
      worst = val[kd - 1];
    }
  }
  return worst;
}

struct Scratch {
  std::vector<int64_t> cand;
};

// cand[0, count) = the indices j (ascending) with d[j] <= t0; returns count. cand needs room for
// m + 4 entries. Branch-free: the loop-carried count is the only dependency.
template <typename V>
inline int64_t compact_at_most(const V* d, int64_t m, V t0, int64_t* cand) {
  int64_t count = 0;
  for (int64_t j = 0; j < m; ++j) {
    cand[count] = j;
    count += d[j] <= t0;
  }
  return count;
}

#if defined(__SSE2__)
// Four keys per step: a compare mask selects their offsets from a table (all four are stored,
// the count advances by the number that qualify).
template <>
inline int64_t compact_at_most<float>(const float* d, int64_t m, float t0, int64_t* cand) {
  static constexpr int8_t kOffsets[16][4] = {
      {0, 0, 0, 0}, {0, 0, 0, 0}, {1, 0, 0, 0}, {0, 1, 0, 0}, {2, 0, 0, 0}, {0, 2, 0, 0},
      {1, 2, 0, 0}, {0, 1, 2, 0}, {3, 0, 0, 0}, {0, 3, 0, 0}, {1, 3, 0, 0}, {0, 1, 3, 0},
      {2, 3, 0, 0}, {0, 2, 3, 0}, {1, 2, 3, 0}, {0, 1, 2, 3}};
  static constexpr int8_t kCount[16] = {0, 1, 1, 2, 1, 2, 2, 3, 1, 2, 2, 3, 2, 3, 3, 4};
  const __m128 t = _mm_set1_ps(t0);
  int64_t count = 0, j = 0;
  for (; j + 4 <= m; j += 4) {
    const int mask = _mm_movemask_ps(_mm_cmple_ps(_mm_loadu_ps(d + j), t));
    const int8_t* offsets = kOffsets[mask];
    cand[count] = j + offsets[0];
    cand[count + 1] = j + offsets[1];
    cand[count + 2] = j + offsets[2];
    cand[count + 3] = j + offsets[3];
    count += kCount[mask];
  }
  for (; j < m; ++j) {
    cand[count] = j;
    count += d[j] <= t0;
  }
  return count;
}
#endif

// kd smallest of the NaN-free row d[0, m) into (val, idx), ascending, equal values in index
// order. Returns false when that answer is not unique (an exact tie inside the list or at its
// boundary), where the caller falls back to torch's own algorithm.
template <typename V>
inline bool select_row(const V* d, int64_t m, int64_t kd, V* val, int64_t* idx,
                       std::vector<V>& lane_min, Scratch& scratch) {
  // Lanes: key j belongs to lane j % L. Each lane's minimum is some key's distance, so at least
  // kd keys lie within t0 = the kd-th smallest lane minimum: the answer is among the keys with
  // d <= t0, typically 2-3 kd of them, found by a branch-free pass. With few lanes per key
  // (m >> kd) a plain scan with an early-rejecting threshold is cheaper.
  const int64_t L = kd < 24 ? kd : 2 * kd;
  V worst;
  int64_t count;
  if (L > m || m > 384 * kd) {
    count = m;
    worst = insert_candidates(d, kd, val, idx, m, [](int64_t q) { return q; });
  } else {
    lane_min.assign(d, d + L);
    V* mn = lane_min.data();
    int64_t j = L;
    for (; j + L <= m; j += L) {
      const V* row = d + j;
      for (int64_t t = 0; t < L; ++t) mn[t] = row[t] < mn[t] ? row[t] : mn[t];
    }
    for (int64_t t = 0; j + t < m; ++t) mn[t] = d[j + t] < mn[t] ? d[j + t] : mn[t];
    V t0;
    if (L == kd) {
      t0 = *std::max_element(lane_min.begin(), lane_min.end());
    } else {
      std::nth_element(lane_min.begin(), lane_min.begin() + kd - 1, lane_min.end());
      t0 = lane_min[kd - 1];
    }
    scratch.cand.resize(m + 4);
    int64_t* cand = scratch.cand.data();
    count = compact_at_most<V>(d, m, t0, cand);
    worst = insert_candidates(d, kd, val, idx, count, [cand](int64_t q) { return cand[q]; });
  }
  for (int64_t p = 1; p < kd; ++p) {
    if (val[p] == val[p - 1]) return false;
  }
  if (kd < m) {
    // Keys no farther than the kd-th: exactly kd unless one ties with it. All of them are
    // candidates, since worst <= t0.
    int64_t at_most = 0;
    if (count == m) {
      for (int64_t k = 0; k < m; ++k) at_most += d[k] <= worst;
    } else {
      const int64_t* cand = scratch.cand.data();
      for (int64_t q = 0; q < count; ++q) at_most += d[cand[q]] <= worst;
    }
    if (at_most != kd) return false;
  }
  return true;
}

// torch.topk(-d, kd, largest=True, sorted=True) exactly as ATen's CPU kernel computes it.
template <typename V>
inline void torch_topk_row(const V* d, int64_t m, int64_t kd,
                           std::vector<std::pair<V, int64_t>>& queue, int64_t* out) {
  using elem_t = std::pair<V, int64_t>;
  queue.resize(m);
  for (int64_t j = 0; j < m; ++j) {
    queue[j].first = -d[j];
    queue[j].second = j;
  }
  // NaN first, then larger (negated) values first: the comparator of TopKImpl.h for largest=True.
  auto before = [](const elem_t& x, const elem_t& y) -> bool {
    return (std::isnan(x.first) && !std::isnan(y.first)) || (x.first > y.first);
  };
  if (kd * 64 <= m) {
    std::partial_sort(queue.begin(), queue.begin() + kd, queue.end(), before);
  } else {
    std::nth_element(queue.begin(), queue.begin() + kd - 1, queue.end(), before);
    std::sort(queue.begin(), queue.begin() + kd - 1, before);
  }
  for (int64_t p = 0; p < kd; ++p) out[p] = queue[p].second;
}

template <typename T>
void knn_select_kernel(const at::Tensor& dot, const at::Tensor& q_sq, const at::Tensor& k_sq,
                       const at::Tensor* bias, int64_t kd, at::Tensor& out) {
  using V = typename OpMath<T>::type;
  const int64_t B = dot.size(0), n = dot.size(1), m = dot.size(2);
  const T* dot_p = dot.const_data_ptr<T>();
  const T* q_p = q_sq.const_data_ptr<T>();
  const T* k_p = k_sq.const_data_ptr<T>();
  const T* bias_p = bias != nullptr ? bias->const_data_ptr<T>() : nullptr;
  int64_t* out_p = out.mutable_data_ptr<int64_t>();
  // About 32k distances per task, so that small chunks do not pay for a thread wake-up.
  const int64_t grain = std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(m, 1));
  at::parallel_for(0, B * n, grain, [&](int64_t begin, int64_t end) {
    std::vector<V> buf(m);
    std::vector<V> val(kd);
    std::vector<int64_t> idx(kd);
    std::vector<std::pair<V, int64_t>> queue;
    std::vector<V> lane_min;
    Scratch scratch;
    for (int64_t r = begin; r < end; ++r) {
      const int64_t b = r / n, i = r % n;
      const bool nan = row_distances<T, V>(dot_p + r * m, static_cast<V>(q_p[r]), k_p + b * m,
                                           bias_p != nullptr ? bias_p + i * m : nullptr, m,
                                           buf.data());
      int64_t* o = out_p + r * kd;
      if (!nan && select_row<V>(buf.data(), m, kd, val.data(), idx.data(), lane_min, scratch)) {
        std::copy(idx.begin(), idx.end(), o);
      } else {
        torch_topk_row<V>(buf.data(), m, kd, queue, o);
      }
    }
  });
}

at::Tensor knn_select_cpu(const at::Tensor& dot, const at::Tensor& q_sq, const at::Tensor& k_sq,
                          const std::optional<at::Tensor>& bias, int64_t kd) {
  TORCH_CHECK(dot.dim() == 3, "knn_select: 'dot' must be (B, n, m), got ", dot.sizes());
  const int64_t B = dot.size(0), n = dot.size(1), m = dot.size(2);
  TORCH_CHECK(q_sq.dim() == 3 && q_sq.size(0) == B && q_sq.size(1) == n && q_sq.size(2) == 1,
              "knn_select: 'q_sq' must be (B, n, 1) = (", B, ", ", n, ", 1), got ", q_sq.sizes());
  TORCH_CHECK(k_sq.dim() == 3 && k_sq.size(0) == B && k_sq.size(1) == 1 && k_sq.size(2) == m,
              "knn_select: 'k_sq' must be (B, 1, m) = (", B, ", 1, ", m, "), got ", k_sq.sizes());
  TORCH_CHECK(kd >= 1 && kd <= m, "knn_select: need 1 <= kd <= m = ", m, ", got kd = ", kd);
  const auto dtype = dot.scalar_type();
  TORCH_CHECK(q_sq.scalar_type() == dtype && k_sq.scalar_type() == dtype,
              "knn_select: 'dot', 'q_sq' and 'k_sq' must share one dtype");
  at::Tensor bias_c;
  if (bias.has_value()) {
    TORCH_CHECK(bias->dim() == 2 && bias->size(0) == n && bias->size(1) == m,
                "knn_select: 'bias' must be (n, m) = (", n, ", ", m, "), got ", bias->sizes());
    TORCH_CHECK(bias->scalar_type() == dtype, "knn_select: 'bias' must have the dtype of 'dot'");
    bias_c = bias->contiguous();
  }
  auto out = at::empty({B, n, kd}, dot.options().dtype(at::kLong));
  if (out.numel() == 0) return out;
  const auto dot_c = dot.contiguous();
  const auto q_c = q_sq.contiguous();
  const auto k_c = k_sq.contiguous();
  const at::Tensor* bias_ptr = bias.has_value() ? &bias_c : nullptr;
  switch (dtype) {
    case at::kFloat:
      knn_select_kernel<float>(dot_c, q_c, k_c, bias_ptr, kd, out);
      break;
    case at::kDouble:
      knn_select_kernel<double>(dot_c, q_c, k_c, bias_ptr, kd, out);
      break;
    case at::kBFloat16:
      knn_select_kernel<at::BFloat16>(dot_c, q_c, k_c, bias_ptr, kd, out);
      break;
    case at::kHalf:
      knn_select_kernel<at::Half>(dot_c, q_c, k_c, bias_ptr, kd, out);
      break;
    default:
      TORCH_CHECK(false, "knn_select: unsupported dtype ", dtype,
                  " (float32, float64, bfloat16 and float16 are compiled)");
  }
  return out;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyg_vig, m) {
  m.def("knn_select(Tensor dot, Tensor q_sq, Tensor k_sq, Tensor? bias, int kd) -> Tensor");
}

TORCH_LIBRARY_IMPL(pyg_vig, CPU, m) {
  m.impl("knn_select", &knn_select_cpu);
}

}  // namespace pyg_vig
