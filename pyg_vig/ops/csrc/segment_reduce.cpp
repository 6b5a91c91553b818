// Fused neighbour gather + segment reduction over a target-sorted (CSR) graph (CPU).
//
//     out[i] = reduce_{e in [ptr[i], ptr[i+1])} x[src[e]],     empty segments give 0
//
// which is PyG message passing with the message x_j and aggregation `reduce`, without the
// [E, C] message matrix. Semantics follow PyG's generic path (x.index_select(0, src) followed by
// torch_geometric.utils.scatter): sums start from zero and add the edges in edge order, mean
// divides by the in-degree, max/min propagate NaN. In the backward pass a max/min gradient is
// split evenly among the edges whose value equals the result exactly (torch.amax and
// scatter_reduce do the same), and the gradient of a source row adds its edges in edge order,
// as index_add_ does. Reduced floats (bfloat16, float16) accumulate sums in float.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace pyg_vig {
namespace {

enum class Reduce { Sum, Mean, Max, Min };

Reduce parse_reduce(const std::string& reduce) {
  if (reduce == "sum") return Reduce::Sum;
  if (reduce == "mean") return Reduce::Mean;
  if (reduce == "max") return Reduce::Max;
  if (reduce == "min") return Reduce::Min;
  TORCH_CHECK(false, "gather_segment_reduce: reduce must be 'sum', 'mean', 'max' or 'min', got '",
              reduce, "'");
}

template <typename T>
struct OpMath {
  using type = float;
};
template <>
struct OpMath<double> {
  using type = double;
};

// Grain for parallel loops over rows of `work` elements each.
inline int64_t grain_for(int64_t work) {
  return std::max<int64_t>(1, at::internal::GRAIN_SIZE / std::max<int64_t>(work, 1));
}

void check_graph(const at::Tensor& x, const at::Tensor& src, const at::Tensor& ptr) {
  TORCH_CHECK(x.dim() == 2, "gather_segment_reduce: 'x' must be [M, C], got ", x.sizes());
  TORCH_CHECK(src.dim() == 1 && src.scalar_type() == at::kLong,
              "gather_segment_reduce: 'src' must be a 1-D int64 tensor");
  TORCH_CHECK(ptr.dim() == 1 && ptr.numel() >= 1 && ptr.scalar_type() == at::kLong,
              "gather_segment_reduce: 'ptr' must be a non-empty 1-D int64 tensor");
}

// ptr must be a CSR pointer over all edges: ptr[0] = 0, non-decreasing, ptr[N] = E.
void check_ptr(const int64_t* ptr, int64_t N, int64_t E) {
  TORCH_CHECK(ptr[0] == 0 && ptr[N] == E, "gather_segment_reduce: 'ptr' must start at 0 and end at ",
              "src.numel() = ", E, ", got ptr[0] = ", ptr[0], ", ptr[-1] = ", ptr[N]);
  for (int64_t i = 0; i < N; ++i) {
    TORCH_CHECK(ptr[i] <= ptr[i + 1], "gather_segment_reduce: 'ptr' must be non-decreasing");
  }
}

inline void check_src(int64_t j, int64_t M) {
  TORCH_CHECK(j >= 0 && j < M, "gather_segment_reduce: src index ", j, " is out of range for ", M,
              " source rows");
}

// ---------------------------------------------------------------------------------- forward
template <typename T>
void forward_kernel(const T* x, const int64_t* src, const int64_t* ptr, T* out, int64_t N,
                    int64_t M, int64_t C, Reduce reduce) {
  using V = typename OpMath<T>::type;
  const int64_t E = ptr[N];
  const int64_t avg = N > 0 ? std::max<int64_t>(1, E / N) : 1;
  at::parallel_for(0, N, grain_for(avg * C), [&](int64_t begin, int64_t end) {
    std::vector<V> acc(C);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e0 = ptr[i], e1 = ptr[i + 1];
      T* __restrict__ o = out + i * C;
      if (e0 == e1) {
        std::fill(o, o + C, T(0));
        continue;
      }
      if (reduce == Reduce::Sum || reduce == Reduce::Mean) {
        V* __restrict__ a = acc.data();
        std::fill(a, a + C, V(0));
        for (int64_t e = e0; e < e1; ++e) {
          const int64_t j = src[e];
          check_src(j, M);
          const T* __restrict__ row = x + j * C;
          for (int64_t c = 0; c < C; ++c) a[c] += static_cast<V>(row[c]);
        }
        if (reduce == Reduce::Mean) {
          // PyG divides the (rounded) sum by the count in the tensor dtype.
          const V count = static_cast<V>(static_cast<T>(static_cast<V>(e1 - e0)));
          for (int64_t c = 0; c < C; ++c) {
            o[c] = static_cast<T>(static_cast<V>(static_cast<T>(acc[c])) / count);
          }
        } else {
          for (int64_t c = 0; c < C; ++c) o[c] = static_cast<T>(acc[c]);
        }
      } else {
        const int64_t j0 = src[e0];
        check_src(j0, M);
        std::copy(x + j0 * C, x + j0 * C + C, o);
        const bool is_max = reduce == Reduce::Max;
        for (int64_t e = e0 + 1; e < e1; ++e) {
          const int64_t j = src[e];
          check_src(j, M);
          const T* __restrict__ row = x + j * C;
          for (int64_t c = 0; c < C; ++c) {
            const V v = static_cast<V>(row[c]);
            const V a = static_cast<V>(o[c]);
            // NaN wins and stays, as in torch.amax / scatter_reduce('amax').
            const bool take = is_max ? (v > a) : (v < a);
            o[c] = (take || v != v) ? row[c] : o[c];
          }
        }
      }
    }
  });
}

at::Tensor gather_segment_reduce_cpu(const at::Tensor& x, const at::Tensor& src,
                                     const at::Tensor& ptr, c10::string_view reduce_name) {
  check_graph(x, src, ptr);
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  const auto x_c = x.contiguous();
  const auto src_c = src.contiguous();
  const auto ptr_c = ptr.contiguous();
  const int64_t M = x.size(0), C = x.size(1), N = ptr.numel() - 1, E = src.numel();
  const int64_t* ptr_p = ptr_c.const_data_ptr<int64_t>();
  check_ptr(ptr_p, N, E);
  auto out = at::empty({N, C}, x.options());
  if (out.numel() == 0) return out;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(),
                                  "gather_segment_reduce", [&] {
    forward_kernel<scalar_t>(x_c.const_data_ptr<scalar_t>(), src_c.const_data_ptr<int64_t>(), ptr_p,
                             out.mutable_data_ptr<scalar_t>(), N, M, C, reduce);
  });
  return out;
}

// --------------------------------------------------------------------------------- backward
// Gradient per target row and channel, as PyG's path forms it: the incoming gradient divided by
// the in-degree (mean) or by the number of exactly tied winners (max/min), rounded to T.
template <typename T>
void target_grad_kernel(const T* grad, const T* x, const int64_t* src, const int64_t* ptr,
                        const T* out, T* gd, int64_t N, int64_t C, Reduce reduce) {
  using V = typename OpMath<T>::type;
  const int64_t E = ptr[N];
  const int64_t avg = N > 0 ? std::max<int64_t>(1, E / N) : 1;
  at::parallel_for(0, N, grain_for(avg * C), [&](int64_t begin, int64_t end) {
    std::vector<V> ties(C);
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e0 = ptr[i], e1 = ptr[i + 1];
      const T* __restrict__ g = grad + i * C;
      T* __restrict__ d = gd + i * C;
      if (reduce == Reduce::Mean) {
        const V count = static_cast<V>(static_cast<T>(static_cast<V>(std::max<int64_t>(e1 - e0, 1))));
        for (int64_t c = 0; c < C; ++c) d[c] = static_cast<T>(static_cast<V>(g[c]) / count);
        continue;
      }
      V* __restrict__ n = ties.data();
      std::fill(n, n + C, V(0));
      const T* __restrict__ o = out + i * C;
      for (int64_t e = e0; e < e1; ++e) {
        const T* __restrict__ row = x + src[e] * C;
        for (int64_t c = 0; c < C; ++c) {
          n[c] += static_cast<V>(static_cast<V>(row[c]) == static_cast<V>(o[c]));
        }
      }
      for (int64_t c = 0; c < C; ++c) {
        const V count = static_cast<V>(static_cast<T>(n[c]));
        d[c] = static_cast<T>(static_cast<V>(g[c]) / count);
      }
    }
  });
}

// grad_x[j] = sum over the edges e with src[e] == j, in edge order, of gd[dst(e)] (masked to the
// winners for max/min). Edges are grouped by source with a stable counting sort, so every source
// row is written by one thread and no atomics are needed.
template <typename T>
void source_grad_kernel(const T* gd, const T* x, const int64_t* src, const int64_t* ptr,
                        const T* out, T* grad_x, int64_t N, int64_t M, int64_t C, Reduce reduce) {
  using V = typename OpMath<T>::type;
  const int64_t E = ptr[N];
  std::vector<int64_t> start(M + 1, 0);
  for (int64_t e = 0; e < E; ++e) ++start[src[e] + 1];
  for (int64_t j = 0; j < M; ++j) start[j + 1] += start[j];
  std::vector<int64_t> fill(start.begin(), start.end() - 1);
  std::vector<int64_t> dst(E);  // target of each edge, grouped by source, in edge order
  for (int64_t i = 0; i < N; ++i) {
    for (int64_t e = ptr[i]; e < ptr[i + 1]; ++e) dst[fill[src[e]]++] = i;
  }
  const bool masked = reduce == Reduce::Max || reduce == Reduce::Min;
  const int64_t avg = M > 0 ? std::max<int64_t>(1, E / M) : 1;
  at::parallel_for(0, M, grain_for(avg * C), [&](int64_t begin, int64_t end) {
    std::vector<V> acc(C);
    for (int64_t j = begin; j < end; ++j) {
      V* __restrict__ a = acc.data();
      std::fill(a, a + C, V(0));
      const T* __restrict__ xj = masked ? x + j * C : nullptr;
      for (int64_t p = start[j]; p < start[j + 1]; ++p) {
        const int64_t i = dst[p];
        const T* __restrict__ d = gd + i * C;
        if (masked) {
          // (x_j == out_i) * grad_i, the product PyG's path forms for every edge.
          const T* __restrict__ o = out + i * C;
          for (int64_t c = 0; c < C; ++c) {
            a[c] += static_cast<V>(static_cast<V>(xj[c]) == static_cast<V>(o[c])) *
                    static_cast<V>(d[c]);
          }
        } else {
          for (int64_t c = 0; c < C; ++c) a[c] += static_cast<V>(d[c]);
        }
      }
      T* __restrict__ gx = grad_x + j * C;
      for (int64_t c = 0; c < C; ++c) gx[c] = static_cast<T>(a[c]);
    }
  });
}

at::Tensor gather_segment_reduce_backward_cpu(const at::Tensor& grad,
                                              const std::optional<at::Tensor>& x,
                                              const at::Tensor& src, const at::Tensor& ptr,
                                              const std::optional<at::Tensor>& out,
                                              int64_t num_src, c10::string_view reduce_name) {
  const Reduce reduce = parse_reduce(std::string(reduce_name));
  const bool masked = reduce == Reduce::Max || reduce == Reduce::Min;
  TORCH_CHECK(grad.dim() == 2, "gather_segment_reduce_backward: 'grad' must be [N, C]");
  const int64_t M = num_src, C = grad.size(1), N = ptr.numel() - 1, E = src.numel();
  TORCH_CHECK(!masked || (x.has_value() && out.has_value()),
              "gather_segment_reduce_backward: max/min need 'x' and 'out'");
  check_graph(masked ? *x : grad, src, ptr);
  TORCH_CHECK(grad.size(0) == N, "gather_segment_reduce_backward: 'grad' must have ", N, " rows");
  at::Tensor x_c, out_c;
  if (masked) {
    TORCH_CHECK(x->size(0) == M && x->size(1) == C && out->sizes() == grad.sizes(),
                "gather_segment_reduce_backward: 'x' must be [M, C] and 'out' [N, C]");
    TORCH_CHECK(x->scalar_type() == grad.scalar_type() && out->scalar_type() == grad.scalar_type(),
                "gather_segment_reduce_backward: 'grad', 'x' and 'out' must share one dtype");
    x_c = x->contiguous();
    out_c = out->contiguous();
  }
  const auto src_c = src.contiguous();
  const auto ptr_c = ptr.contiguous();
  const auto grad_c = grad.contiguous();
  const int64_t* ptr_p = ptr_c.const_data_ptr<int64_t>();
  const int64_t* src_p = src_c.const_data_ptr<int64_t>();
  check_ptr(ptr_p, N, E);
  for (int64_t e = 0; e < E; ++e) check_src(src_p[e], M);
  auto grad_x = at::empty({M, C}, grad.options());
  if (grad_x.numel() == 0) return grad_x;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, grad.scalar_type(),
                                  "gather_segment_reduce_backward", [&] {
    const scalar_t* x_p = masked ? x_c.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* out_p = masked ? out_c.const_data_ptr<scalar_t>() : nullptr;
    const scalar_t* gd = grad_c.const_data_ptr<scalar_t>();
    at::Tensor gd_buf;
    if (reduce != Reduce::Sum) {
      gd_buf = at::empty({N, C}, grad.options());
      target_grad_kernel<scalar_t>(gd, x_p, src_p, ptr_p, out_p,
                                   gd_buf.mutable_data_ptr<scalar_t>(), N, C, reduce);
      gd = gd_buf.const_data_ptr<scalar_t>();
    }
    source_grad_kernel<scalar_t>(gd, x_p, src_p, ptr_p, out_p,
                                 grad_x.mutable_data_ptr<scalar_t>(), N, M, C, reduce);
  });
  return grad_x;
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(pyg_vig, m) {
  m.def("gather_segment_reduce(Tensor x, Tensor src, Tensor ptr, str reduce) -> Tensor");
  m.def(
      "gather_segment_reduce_backward(Tensor grad, Tensor? x, Tensor src, Tensor ptr, Tensor? out, "
      "SymInt num_src, str reduce) -> Tensor");
}

TORCH_LIBRARY_IMPL(pyg_vig, CPU, m) {
  m.impl("gather_segment_reduce", &gather_segment_reduce_cpu);
  m.impl("gather_segment_reduce_backward", &gather_segment_reduce_backward_cpu);
}

}  // namespace pyg_vig
