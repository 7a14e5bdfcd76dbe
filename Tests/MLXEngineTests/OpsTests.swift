import MLXEngine
import XCTest

/// Expected values are numpy 2.4.6 (float64, rounded to float32) or hand-derived, as noted per test.
final class OpsTests: XCTestCase {
    let x6 = Tensor([-2.0, -0.5, 0.0, 0.75, 1.5, 3.0] as [Float])
    // a = arange(12).reshape(3, 4) * 0.37 - 1.1
    var a34: Tensor { Tensor((0..<12).map { Float($0) * 0.37 - 1.1 }, shape: [3, 4]) }

    func testCreationAndReadBack() throws {
        let t = Tensor([1, 2, 3, 4, 5, 6] as [Int32], shape: [2, 3])
        XCTAssertEqual(t.shape, [2, 3])
        XCTAssertEqual(t.dtype, .int32)
        XCTAssertEqual(try t.values(Int32.self), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try t.asType(.float32).values(Float.self), [1, 2, 3, 4, 5, 6])
        XCTAssertEqual(try Tensor.zeros([2, 2], dtype: .bfloat16).values(Float.self), [0, 0, 0, 0])
        XCTAssertEqual(try Tensor.arange(5).values(Int32.self), [0, 1, 2, 3, 4])
        XCTAssertEqual(try Tensor.full([3], value: 2.5).values(Float.self), [2.5, 2.5, 2.5])
        // bfloat16 keeps 8 significant bits: 1.00390625 = 1 + 2^-8 rounds to 1 (round to nearest even).
        XCTAssertEqual(try Tensor([1.00390625, 3.0] as [Float]).asType(.bfloat16).values(Float.self), [1.0, 3.0])
        XCTAssertEqual(try Tensor([true, false, true]).values(Bool.self), [true, false, true])
    }

    func testElementwiseAgainstNumpy() {
        assertClose(NN.gelu(x6), [-0.0455002635717392, -0.1542687714099884, 0.0, 0.5800294876098633, 1.3997892141342163, 2.995950222015381])
        assertClose(NN.geluTanh(x6), [-0.04540230706334114, -0.1542859971523285, 0.0, 0.5799605846405029, 1.3995715379714966, 2.9963626861572266])
        assertClose(NN.silu(x6), [-0.23840583860874176, -0.1887703388929367, 0.0, 0.509384036064148, 1.2263617515563965, 2.857722282409668])
        assertClose(x6.erf(), [-0.9953222870826721, -0.5204998850822449, 0.0, 0.7111556529998779, 0.9661051630973816, 0.9999778866767883])
        assertClose(x6.exp(), [0.1353352832366127, 0.6065306597126334, 1.0, 2.117000016612675, 4.4816890703380645, 20.085536923187668])
        assertClose((x6 * x6 + 1).sqrt(), [2.23606797749979, 1.118033988749895, 1.0, 1.25, 1.8027756377319946, 3.1622776601683795])
        assertClose(x6.clipped(min: -1, max: 1), [-1, -0.5, 0, 0.75, 1, 1])
    }

    func testBroadcastingAndComparison() throws {
        let col = Tensor([1, 2] as [Float], shape: [2, 1])
        let row = Tensor([10, 20, 30] as [Float], shape: [1, 3])
        XCTAssertEqual(try (col + row).values(Float.self), [11, 21, 31, 12, 22, 32])
        XCTAssertEqual((col * row).shape, [2, 3])
        XCTAssertEqual(try (row .> 15).values(Bool.self), [false, true, true])
        XCTAssertEqual(try which(row .> 15, row, Tensor(0.0)).values(Float.self), [0, 20, 30])
    }

    func testReductions() throws {
        let t = Tensor([1, 2, 3, 4, 5, 6] as [Float], shape: [2, 3])
        XCTAssertEqual(try t.sum().item(Float.self), 21)
        XCTAssertEqual(try t.sum(axis: 0).values(Float.self), [5, 7, 9])
        XCTAssertEqual(try t.mean(axis: 1).values(Float.self), [2, 5])
        XCTAssertEqual(t.max(axis: 1, keepDims: true).shape, [2, 1])
        XCTAssertEqual(try t.argMax(axis: 1).values(Int32.self), [2, 2])
        XCTAssertEqual(try t.cumsum(axis: 1).values(Float.self), [1, 3, 6, 4, 9, 15])
        XCTAssertEqual(try Tensor([3, 1, 2] as [Float]).sorted().values(Float.self), [1, 2, 3])
        XCTAssertEqual(try Tensor([3, 1, 2] as [Float]).argSort().values(Int32.self), [1, 2, 0])
        XCTAssertEqual(try Set(Tensor([3, 9, 1, 7] as [Float]).topK(2).values(Float.self)), [9, 7])
        // numpy: np.log(np.exp(a).sum(1))
        assertClose(a34.logSumExp(axis: 1), [0.9252530932426453, 2.4052531719207764, 3.8852531909942627])
        // population variance of [1..6] = 35/12
        assertClose(t.variance(), [35.0 / 12.0])
    }

    func testSoftmaxAndLogSoftmax() {
        let expected: [Float] = [0.1319604367017746, 0.1910437047481537, 0.2765805721282959, 0.4004152715206146]
        assertClose(NN.softmax(a34, axis: -1), expected + expected + expected)
        assertClose(NN.logSoftmax(a34, axis: -1).exp(), expected + expected + expected)
    }

    func testMatmul() {
        let a = Tensor((0..<6).map { Float($0) - 2 }, shape: [2, 3])
        let b = Tensor((0..<12).map { Float($0) * 0.5 - 1 }, shape: [3, 4])
        assertClose(matmul(a, b), [1.0, -0.5, -2.0, -3.5, 10.0, 13.0, 16.0, 19.0])
        assertClose(addmm(Tensor.ones([2, 4]), a, b, alpha: 2, beta: 1), [3.0, 0.0, -3.0, -6.0, 21.0, 27.0, 33.0, 39.0])
    }

    func testNorms() {
        let w = Tensor([1.0, 0.5, -1.0, 2.0] as [Float])
        let b = Tensor([0.1, 0.2, 0.3, 0.4] as [Float])
        let ln: [Float] = [-1.241601586341858, -0.023600265383720398, -0.14720052480697632, 3.083203077316284]
        assertClose(NN.layerNorm(a34, weight: w, bias: b, eps: 1e-5), ln + ln + ln, atol: 1e-5)
        assertClose(NN.rmsNorm(a34, weight: w, eps: 1e-6), [-1.607680320739746, -0.5334575772285461, 0.5261499285697937, 0.029230551794171333, 0.37166574597358704, 0.36677539348602295, -1.0954358577728271, 2.914641857147217, 0.7591298818588257, 0.45506978034973145, -1.0611492395401, 2.4243178367614746], atol: 1e-5)
        // numpy: g = (arange(16).reshape(1,2,2,4) ** 1.3) * 0.1, groups 2 over channels (NHWC)
        let g = Tensor((0..<16).map { Float(Foundation.pow(Double($0), 1.3) * 0.1) }, shape: [1, 2, 2, 4])
        assertClose(NN.groupNorm(g, groups: 2, weight: w, bias: b, eps: 1e-5), [-1.1726820468902588, -0.38586029410362244, 1.6375483274459839, -1.9625028371810913, -0.5605666041374207, -0.02728164568543434, 0.9233854413032532, -0.4299049973487854, 0.33452290296554565, 0.4419543445110321, 0.03785329312086105, 1.405725121498108, 1.3805538415908813, 0.9802734851837158, -0.9634637832641602, 3.457329034805298], atol: 1e-5)
    }

    func testRopeRotateHalf() {
        // numpy: x = (arange(12).reshape(1,1,3,4) - 5) * 0.3, positions 2, 3, 4, theta 10000, rotate-half layout
        let x = Tensor((0..<12).map { (Float($0) - 5) * 0.3 }, shape: [1, 1, 3, 4])
        assertClose(NN.rope(x, dims: 4, traditional: false, base: 10000, offset: 2), [1.442587971687317, -1.187760829925537, -0.9894139766693115, -0.6238784193992615, 0.2546617388725281, -0.017997300252318382, -0.33933374285697937, 0.5997300148010254, 0.5469244718551636, 1.1270593404769897, -1.6615877151489258, 1.8465473651885986], atol: 1e-5)
    }

    func testShapesAndIndexing() throws {
        let t = Tensor((0..<24).map { Float($0) }, shape: [2, 3, 4])
        XCTAssertEqual(t.transposed([2, 0, 1]).shape, [4, 2, 3])
        XCTAssertEqual(try t.transposed([2, 0, 1]).values(Float.self).prefix(3), [0, 4, 8])
        XCTAssertEqual(try t.slice(axis: 2, 1, 3).values(Float.self), [1, 2, 5, 6, 9, 10, 13, 14, 17, 18, 21, 22])
        XCTAssertEqual(try t.slice(axis: -1, -1).values(Float.self), [3, 7, 11, 15, 19, 23])
        XCTAssertEqual(try t[1][2].values(Float.self), [20, 21, 22, 23])
        XCTAssertEqual(try t.take(Tensor([2, 0] as [Int32]), axis: 1).slice(axis: 0, 0, 1).values(Float.self), [8, 9, 10, 11, 0, 1, 2, 3])
        XCTAssertEqual(try concatenated([Tensor([1] as [Float]), Tensor([2, 3] as [Float])]).values(Float.self), [1, 2, 3])
        XCTAssertEqual(stacked([Tensor([1, 2] as [Float]), Tensor([3, 4] as [Float])], axis: 1).shape, [2, 2])
        XCTAssertEqual(try Tensor([1, 2] as [Float]).padded(low: [1], high: [2], value: 9).values(Float.self), [9, 1, 2, 9, 9])
        let updated = Tensor.zeros([4]).sliceUpdated(Tensor([5, 6] as [Float]), start: [1], stop: [3])
        XCTAssertEqual(try updated.values(Float.self), [0, 5, 6, 0])
        XCTAssertEqual(try Tensor.zeros([3]).scatterAdd(Tensor([0, 2, 0] as [Int32]), values: Tensor([1, 2, 3] as [Float]), axis: 0).values(Float.self), [4, 0, 2])
        XCTAssertEqual(t.flattened(start: 1).shape, [2, 12])
    }

    func testPixelShuffleMatchesTorchOrdering() throws {
        // torch.nn.PixelShuffle(2) on NCHW (1, 4, 1, 1) with channel values [0, 1, 2, 3] gives
        // [[0, 1], [2, 3]]: output (i, j) comes from channel 2i + j. Same in NHWC here.
        let x = Tensor([0, 1, 2, 3] as [Float], shape: [1, 1, 1, 4])
        XCTAssertEqual(try NN.pixelShuffle(x, factor: 2).values(Float.self), [0, 1, 2, 3])
        // Two output channels: channel c takes input channels 4c..4c+3.
        let y = Tensor((0..<8).map { Float($0) }, shape: [1, 1, 1, 8])
        let out = NN.pixelShuffle(y, factor: 2)  // (1, 2, 2, 2)
        XCTAssertEqual(out.shape, [1, 2, 2, 2])
        XCTAssertEqual(try out.values(Float.self), [0, 4, 1, 5, 2, 6, 3, 7])
    }

    func testUpsampleNearest() throws {
        let x = Tensor([1, 2, 3, 4] as [Float], shape: [1, 2, 2, 1])
        XCTAssertEqual(try NN.upsampleNearest(x, factor: 2).values(Float.self), [1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4])
    }

    func testConv2dHandDerived() throws {
        // 3x3 input of ones, 2x2 kernel of ones, padding 1: corners see 1 element, edges 2, centre 4.
        let x = Tensor.ones([1, 3, 3, 1])
        let w = Tensor.ones([1, 2, 2, 1])
        XCTAssertEqual(try NN.conv2d(x, weight: w, padding: (1, 1)).values(Float.self), [1, 2, 2, 1, 2, 4, 4, 2, 2, 4, 4, 2, 1, 2, 2, 1])
        // Stride 2 without padding on a 4x4 arange picks 2x2 block sums.
        let y = Tensor((0..<16).map { Float($0) }, shape: [1, 4, 4, 1])
        XCTAssertEqual(try NN.conv2d(y, weight: w, stride: (2, 2)).values(Float.self), [10, 18, 42, 50])
        // Groups: two channels, each with its own kernel (x1 and x10).
        let z = Tensor([1, 1, 1, 1, 1, 1, 1, 1] as [Float], shape: [1, 2, 2, 2])
        let gw = Tensor([1, 1, 1, 1, 10, 10, 10, 10] as [Float], shape: [2, 2, 2, 1])
        XCTAssertEqual(try NN.conv2d(z, weight: gw, groups: 2).values(Float.self), [4, 40])
    }

    func testDepthwiseMatchesGroupedConv() throws {
        let x = tensor([2, 9, 9, 6], seed: 1)
        let w = tensor([6, 7, 7], seed: 2)
        let reference = NN.conv2d(x, weight: w.expandedDims(axis: 3), padding: (3, 3), groups: 6)
        let fast = NN.depthwiseConv2d(x, weight: w, padding: (3, 3))
        assertClose(fast, values(reference), atol: 1e-5, rtol: 1e-5)
    }

    func testAttentionMatchesReference() throws {
        let q = tensor([2, 4, 5, 8], seed: 3), k = tensor([2, 2, 7, 8], seed: 4), v = tensor([2, 2, 7, 8], seed: 5)
        let mask = which(tensor([2, 1, 5, 7], seed: 6) .> -0.5, Tensor(0.0), Tensor(-Double.infinity))
        for (causal, m) in [(false, nil), (true, nil), (false, mask), (true, mask)] as [(Bool, Tensor?)] {
            let ref = NN.referenceAttention(queries: q, keys: k, values: v, scale: 0.35, causal: causal, mask: m)
            let fast = NN.attention(queries: q, keys: k, values: v, scale: 0.35, causal: causal, mask: m)
            assertClose(fast, values(ref), atol: 1e-5, rtol: 1e-4, "causal \(causal) mask \(m != nil)")
        }
        // Hand-derived: one query, two keys with equal scores -> mean of the values.
        let q1 = Tensor.zeros([1, 1, 1, 2]), k1 = Tensor.ones([1, 1, 2, 2])
        let v1 = Tensor([1, 2, 3, 4] as [Float], shape: [1, 1, 2, 2])
        XCTAssertEqual(try NN.attention(queries: q1, keys: k1, values: v1, scale: 1).values(Float.self), [2, 3])
    }

    func testCrossEntropy() throws {
        // logits [0, ln 3] -> p = [1/4, 3/4]; target 1 -> -ln(3/4)
        let logits = Tensor([0, Float(Foundation.log(3.0))], shape: [1, 2])
        assertClose(NN.crossEntropy(logits: logits, targets: Tensor([1] as [Int32])), [Float(-Foundation.log(0.75))])
        let masked = NN.crossEntropy(logits: concatenated([logits, logits]), targets: Tensor([1, 0] as [Int32]),
                                     mask: Tensor([true, false]))
        assertClose(masked, [Float(-Foundation.log(0.75))])
    }

    func testRandomKeysAreDeterministic() throws {
        let a = try Random.normal([1000], key: RandomKey(seed: 7)).values(Float.self)
        let b = try Random.normal([1000], key: RandomKey(seed: 7)).values(Float.self)
        let c = try Random.normal([1000], key: RandomKey(seed: 8)).values(Float.self)
        XCTAssertEqual(a, b)
        XCTAssertNotEqual(a, c)
        let mean = a.reduce(0, +) / 1000
        let variance = a.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / 1000
        XCTAssertEqual(mean, 0, accuracy: 0.1)
        XCTAssertEqual(variance, 1, accuracy: 0.15)
        let keys = RandomKey(seed: 1).split(into: 3)
        XCTAssertEqual(keys.count, 3)
        XCTAssertNotEqual(try Random.uniform([4], key: keys[0]).values(Float.self), try Random.uniform([4], key: keys[1]).values(Float.self))
        let u = try Random.uniform([2000], key: keys[2]).values(Float.self)
        XCTAssertTrue(u.allSatisfy { $0 >= 0 && $0 < 1 })
    }

    func testErrorsComeBackAsSwiftErrors() {
        let bad = Tensor.ones([2, 3]) + Tensor.ones([4, 5])
        XCTAssertNotNil(bad.error)
        XCTAssertThrowsError(try bad.eval()) { error in
            XCTAssertTrue("\(error)".contains("broadcast"), "MLX's message should explain: \(error)")
        }
        // The first error propagates through later operations.
        let later = (bad * 2).sum()
        XCTAssertEqual(later.error, bad.error)
        XCTAssertThrowsError(try matmul(Tensor.ones([2, 3]), Tensor.ones([4, 5])).values(Float.self))
        XCTAssertThrowsError(try Tensor.ones([6]).reshaped([4]).eval())
        XCTAssertThrowsError(try Tensor.ones([2]).item(Float.self))
    }
}
