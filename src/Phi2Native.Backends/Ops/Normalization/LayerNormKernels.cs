using Phi2Native.Backends.Cuda;
using Phi2Native.Cuda;
using Phi2Native.Cuda.Resources;
using Phi2Native.Profiling;
using Phi2Native.Tensors;

namespace Phi2Native.Backends.Ops.Normalization;

/// <summary>Launchers for kernels/layernorm.cu (each kernel's contract is in its header), and <see cref="LayerNormOp"/> on the CUDA backend.</summary>
internal static unsafe class LayerNormKernels
{
    /// <summary><see cref="LayerNormOp.Forward"/> on the CUDA backend, the contract checked.</summary>
    internal static Tensor Forward(CudaBackend cuda, Tensor x, Tensor weight, Tensor bias, double eps, int rows, int channels,
        out Tensor mean, out Tensor rstd)
    {
        var y = cuda.Allocate(x.Shape, x.DType, nameof(x));
        mean = cuda.Allocate([rows], DType.F32, nameof(mean));
        rstd = cuda.Allocate([rows], DType.F32, nameof(rstd));
        if (rows > 0 && channels > 0)
            LayerNorm(cuda.DeviceApi, x.DType, cuda.Pointer(x, nameof(x)), cuda.Pointer(weight, nameof(weight)), cuda.Pointer(bias, nameof(bias)),
                (float)eps, cuda.Pointer(y, "y"), cuda.Pointer(mean, nameof(mean)), cuda.Pointer(rstd, nameof(rstd)), rows, channels, cuda.Stream);
        return y;
    }

    /// <summary>
    /// <see cref="LayerNormOp"/>'s backward on the CUDA backend, the contract checked. The kernel accumulates dWeight and
    /// dBias in fp32; a BF16 parameter gradient goes through an fp32 copy (<see cref="CudaBackend.AccumulateInSingle"/>).
    /// </summary>
    internal static void Backward(CudaBackend cuda, Tensor dOutput, Tensor x, Tensor weight, Tensor mean, Tensor rstd, Tensor? dx,
        Tensor? dWeight, Tensor? dBias, int rows, int channels, bool accumulateDx)
    {
        if (rows == 0 || channels == 0) return;
        var (pdy, px, pw) = (cuda.Pointer(dOutput, nameof(dOutput)), cuda.Pointer(x, nameof(x)), cuda.Pointer(weight, nameof(weight)));
        var (pm, pr, pdx) = (cuda.Pointer(mean, nameof(mean)), cuda.Pointer(rstd, nameof(rstd)), cuda.OptionalPointer(dx, nameof(dx)));
        cuda.AccumulateInSingle(dWeight, nameof(dWeight), pdw => cuda.AccumulateInSingle(dBias, nameof(dBias), pdb =>
            LayerNormBackward(cuda.DeviceApi, x.DType, pdy, px, pw, pm, pr, pdx, pdw, pdb, rows, channels, cuda.Stream, accumulateDx: accumulateDx)));
    }

    /// <summary>
    /// Blocks of the backward launch at most when dGamma or dBeta is wanted: each block ends with one atomicAdd per
    /// column, so fewer blocks than rows means fewer atomics, while 512 blocks of up to 256 threads still fill an
    /// H200's 132 SMs several times over.
    /// </summary>
    public const int ParameterGradientBlocks = 512;

    /// <summary>
    /// The widest row whose dGamma/dBeta partials (2 * C floats of dynamic shared memory) fit, beside the kernel's
    /// static shared memory (its reduction's warp partials, well under <see cref="StaticSharedAllowance"/>), in what a
    /// block may use after opting in on every architecture the engine compiles for (163 KiB on sm_80): 20,736.
    /// Phi-2's C is 2560. kernels/resources.tsv holds the static size; a test checks it against the allowance.
    /// </summary>
    public static int MaxParameterGradientChannels { get; } =
        (GpuArchitecture.Compiled.Min(a => a.SharedPerBlockOptIn) - StaticSharedAllowance) / (2 * sizeof(float));

    /// <summary>The static shared memory <see cref="MaxParameterGradientChannels"/> leaves room for.</summary>
    public const int StaticSharedAllowance = 1024;

    private static readonly DType[] Supported = [DType.F32, DType.BF16];

    /// <summary>Launches layernorm.cu's layernorm_{dtype} (contract in its header); 0 rows launches nothing.</summary>
    /// <exception cref="ArgumentException">An unsupported dtype or a misaligned pointer.</exception>
    /// <exception cref="ArgumentNullException">A null pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count, no channels, or eps negative or NaN.</exception>
    public static void LayerNorm(IDeviceApi device, DType dtype, DevicePtr x, DevicePtr gamma, DevicePtr beta, float eps,
        DevicePtr y, DevicePtr mean, DevicePtr rstd, int rows, int channels, DeviceStream stream = default)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("layernorm", dtype, Supported);
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(gamma, dtype, nameof(gamma));
        LaunchArguments.Pointer(beta, dtype, nameof(beta));
        LaunchArguments.Pointer(y, dtype, nameof(y));
        LaunchArguments.Pointer(mean, DType.F32, nameof(mean));
        LaunchArguments.Pointer(rstd, DType.F32, nameof(rstd));
        if (!(eps >= 0)) throw new ArgumentOutOfRangeException(nameof(eps), eps, "eps must be >= 0");
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        if (x == y) throw new ArgumentException("y must not alias x: LayerNorm writes a new tensor, as the CPU backend's does (which uses y as scratch), and only that is checked", nameof(y));
        if (rows == 0) return;
        nint* args = stackalloc nint[]
        {
            (nint)(&x), (nint)(&gamma), (nint)(&beta), (nint)(&eps), (nint)(&y), (nint)(&mean), (nint)(&rstd), (nint)(&rows), (nint)(&channels),
        };
        long elements = (long)rows * channels, size = dtype.SizeInBytes();
        // x once (the second pass re-reads it from cache), gamma and beta; y, mean and rstd. ~8 flops an element: mean, centred square, normalize.
        device.Launch(kernel, new Dim3((uint)rows), LaunchShape.RowBlock(channels), 0, stream, new ReadOnlySpan<nint>(args, 9),
            new KernelCost((elements + 2L * channels) * size, elements * size + 2L * rows * sizeof(float), 0, 8 * elements));
    }

    /// <summary>
    /// Launches layernorm.cu's layernorm_backward_{dtype} (contract in its header), with at most <paramref name="maxBlocks"/>
    /// blocks when dGamma or dBeta is wanted (checks pass a small value so each block walks several rows); dX written (=),
    /// or added to (+=) with <paramref name="accumulateDx"/>; 0 rows, or all three outputs null, launches nothing.
    /// </summary>
    /// <exception cref="ArgumentException">An unsupported dtype, a misaligned pointer, dX aliasing an input, or accumulateDx without dX.</exception>
    /// <exception cref="ArgumentNullException">A null input pointer.</exception>
    /// <exception cref="ArgumentOutOfRangeException">A negative row count, no channels, or maxBlocks below 1.</exception>
    /// <exception cref="NotSupportedException">C is too wide for the parameter-gradient partials in shared memory.</exception>
    public static void LayerNormBackward(IDeviceApi device, DType dtype, DevicePtr dY, DevicePtr x, DevicePtr gamma, DevicePtr mean,
        DevicePtr rstd, DevicePtr dX, DevicePtr dGamma, DevicePtr dBeta, int rows, int channels, DeviceStream stream = default,
        int maxBlocks = ParameterGradientBlocks, bool accumulateDx = false)
    {
        LaunchArguments.Device(device);
        string kernel = KernelName.For("layernorm_backward", dtype, Supported);
        LaunchArguments.Pointer(dY, dtype, nameof(dY));
        LaunchArguments.Pointer(x, dtype, nameof(x));
        LaunchArguments.Pointer(gamma, dtype, nameof(gamma));
        LaunchArguments.Pointer(mean, DType.F32, nameof(mean));
        LaunchArguments.Pointer(rstd, DType.F32, nameof(rstd));
        bool wantDx = LaunchArguments.OptionalPointer(dX, dtype, nameof(dX));
        bool wantParameters = LaunchArguments.OptionalPointer(dGamma, DType.F32, nameof(dGamma)) | LaunchArguments.OptionalPointer(dBeta, DType.F32, nameof(dBeta));
        ArgumentOutOfRangeException.ThrowIfNegative(rows);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(channels);
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(maxBlocks);
        if (accumulateDx && !wantDx) throw new ArgumentException("accumulateDx adds to dX, which is null", nameof(accumulateDx));
        if (wantDx && (dX == dY || dX == x)) throw new ArgumentException("dX must not alias dY or x: it is a separate output, as in the CPU backend (which uses dX as scratch), and only that is checked", nameof(dX));
        if (wantParameters && channels > MaxParameterGradientChannels)
            throw new NotSupportedException($"LayerNorm backward with dGamma/dBeta keeps 2 * C floats in shared memory; C = {channels} exceeds {MaxParameterGradientChannels}");
        if (rows == 0 || !(wantDx || wantParameters)) return;
        int blocks = wantParameters ? Math.Min(rows, maxBlocks) : rows;
        int sharedBytes = wantParameters ? 2 * channels * sizeof(float) : 0;
        int accumulate = accumulateDx ? 1 : 0;
        nint* args = stackalloc nint[]
        {
            (nint)(&dY), (nint)(&x), (nint)(&gamma), (nint)(&mean), (nint)(&rstd), (nint)(&dX), (nint)(&dGamma), (nint)(&dBeta),
            (nint)(&accumulate), (nint)(&rows), (nint)(&channels),
        };
        long elements = (long)rows * channels, size = dtype.SizeInBytes(), parameters = wantParameters ? 2L * channels * sizeof(float) : 0;
        // dY, x, gamma, mean and rstd read (and dX with accumulate); dX written; dGamma and dBeta read and written (+=).
        // ~10 flops an element, 11 with accumulate.
        device.Launch(kernel, new Dim3((uint)blocks), LaunchShape.RowBlock(channels), sharedBytes, stream, new ReadOnlySpan<nint>(args, 11),
            new KernelCost((2 * elements + channels + accumulate * elements) * size + 2L * rows * sizeof(float) + parameters,
                (wantDx ? elements * size : 0) + parameters, 0, (10 + accumulate) * elements));
    }
}
