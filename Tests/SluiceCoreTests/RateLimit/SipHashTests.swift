import Testing

@testable import SluiceCore

/// SipHash-2-4 against the reference test vectors, and the key derivation built on it.
@Suite struct SipHashTests {
    /// The reference key: bytes 00 01 … 0f, read as two little-endian words.
    static let k0: UInt64 = 0x0706_0504_0302_0100
    static let k1: UInt64 = 0x0f0e_0d0c_0b0a_0908

    /// `vectors_sip64` of the reference implementation (veorq/SipHash `vectors.h`, CC0): the
    /// hash of the message 00 01 … (n−1) for n = 0…63, as the little-endian 64-bit value of its
    /// 8 output bytes. Entry 15 is the worked example of the paper's Appendix A.
    static let vectors: [UInt64] = [
        0x726f_db47_dd0e_0e31, 0x74f8_39c5_93dc_67fd, 0x0d6c_8009_d9a9_4f5a, 0x8567_6696_d7fb_7e2d,
        0xcf27_94e0_2771_87b7, 0x1876_5564_cd99_a68d, 0xcbc9_466e_58fe_e3ce, 0xab02_00f5_8b01_d137,
        0x93f5_f579_9a93_2462, 0x9e00_82df_0ba9_e4b0, 0x7a5d_bbc5_94dd_b9f3, 0xf4b3_2f46_226b_ada7,
        0x751e_8fbc_860e_e5fb, 0x14ea_5627_c084_3d90, 0xf723_ca90_8e7a_f2ee, 0xa129_ca61_49be_45e5,
        0x3f2a_cc7f_57c2_9bdb, 0x699a_e9f5_2cbe_4794, 0x4bc1_b3f0_968d_d39c, 0xbb6d_c91d_a779_61bd,
        0xbed6_5cf2_1aa2_ee98, 0xd0f2_cbb0_2e3b_67c7, 0x9353_6795_e3a3_3e88, 0xa80c_038c_cd5c_cec8,
        0xb8ad_50c6_f649_af94, 0xbce1_92de_8a85_b8ea, 0x17d8_35b8_5bbb_15f3, 0x2f2e_6163_076b_cfad,
        0xde4d_aaac_a71d_c9a5, 0xa6a2_5066_8795_6571, 0xad87_a353_5c49_ef28, 0x32d8_92fa_d841_c342,
        0x7127_512f_72f2_7cce, 0xa7f3_2346_f959_78e3, 0x12e0_b01a_bb05_1238, 0x15e0_34d4_0fa1_97ae,
        0x314d_ffbe_0815_a3b4, 0x0279_90f0_2962_3981, 0xcadc_d4e5_9ef4_0c4d, 0x9abf_d876_6a33_735c,
        0x0e3e_a96b_5304_a7d0, 0xad0c_42d6_fc58_5992, 0x1873_06c8_9bc2_15a9, 0xd4a6_0abc_f379_2b95,
        0xf935_451d_e4f2_1df2, 0xa953_8f04_1975_5787, 0xdb9a_cddf_f56c_a510, 0xd06c_98cd_5c09_75eb,
        0xe612_a3cb_9ecb_a951, 0xc766_e62c_fcad_af96, 0xee64_435a_9752_fe72, 0xa192_d576_b245_165a,
        0x0a87_87bf_8ecb_74b2, 0x81b3_e73d_20b4_9b6f, 0x7fa8_220b_a3b2_ecea, 0x2457_31c1_3ca4_2499,
        0xb78d_bfaf_3a8d_83bd, 0xea1a_d565_322a_1a0b, 0x60e6_1c23_a379_5013, 0x6606_d7e4_4628_2b93,
        0x6ca4_ecb1_5c5f_91e1, 0x9f62_6da1_5c96_25f3, 0xe51b_3860_8ef2_5f57, 0x958a_324c_eb06_4572,
    ]

    @Test func paperAppendixExample() {
        // SipHash paper, Appendix A: the 15-byte message 00…0e under key 00…0f.
        let message = (0..<15).map { UInt8($0) }
        #expect(SipHash24.hash(k0: Self.k0, k1: Self.k1, bytes: message) == 0xa129_ca61_49be_45e5)
    }

    @Test(arguments: 0..<64)
    func referenceVector(length: Int) {
        let message = (0..<length).map { UInt8($0) }
        #expect(SipHash24.hash(k0: Self.k0, k1: Self.k1, bytes: message) == Self.vectors[length])
    }

    /// Feeding the message in two parts at every split point gives the same hash.
    @Test func streamingMatchesOneShot() {
        let message = (0..<40).map { UInt8($0) }
        for split in 0...message.count {
            var hasher = SipHash24(k0: Self.k0, k1: Self.k1)
            hasher.append(message[..<split])
            for byte in message[split...] { hasher.append(byte: byte) }
            #expect(hasher.finalize() == Self.vectors[40], "split at \(split)")
        }
    }

    @Test func littleEndianWordIsEightBytes() {
        var words = SipHash24(k0: Self.k0, k1: Self.k1)
        words.append(littleEndian: 0x0706_0504_0302_0100)
        words.append(littleEndian: 0x0f0e_0d0c_0b0a_0908)
        #expect(words.finalize() == Self.vectors[16])
    }

    // MARK: Keys

    static func limiter(seed: (UInt64, UInt64) = (1, 2)) -> RateLimiter {
        let rule = RateLimitRuleConfig(name: "r", key: .header("x-api-key"), concurrent: 1)
        return RateLimiter(rules: [rule, rule], seed: seed)
    }

    @Test func keysSeparateRulesKindsAndValues() {
        let limiter = Self.limiter()
        let secret = Array("sk-secret".utf8)
        let keys = [
            limiter.headerKey(rule: 0, value: secret),
            limiter.headerKey(rule: 1, value: secret),
            limiter.headerKey(rule: 0, value: Array("sk-secreT".utf8)),
            limiter.headerKey(rule: 0, value: []),
            limiter.missingHeaderKey(rule: 0),
            limiter.missingHeaderKey(rule: 1),
            limiter.globalKey(rule: 0),
            limiter.globalKey(rule: 1),
            limiter.clientKey(rule: 0, address: IPAddress("10.0.0.1")!),
            limiter.clientKey(rule: 0, address: IPAddress("10.0.0.2")!),
        ]
        #expect(Set(keys).count == keys.count)
        // Deterministic for one seed, whatever the collection type.
        #expect(limiter.headerKey(rule: 0, value: "sk-secret".utf8) == keys[0])
        #expect(limiter.key(rule: 0, clientAddress: IPAddress(ipv4: 1), headerValue: secret) == keys[0])
        #expect(limiter.key(rule: 0, clientAddress: IPAddress(ipv4: 1), headerValue: nil) == keys[4])
        // A different seed gives unrelated keys.
        #expect(Self.limiter(seed: (1, 3)).headerKey(rule: 0, value: secret) != keys[0])
    }

    @Test func clientKeyIgnoresHowIPv4Arrived() {
        let limiter = Self.limiter()
        let plain = limiter.clientKey(rule: 0, address: IPAddress("192.0.2.7")!)
        #expect(limiter.clientKey(rule: 0, address: IPAddress("::ffff:192.0.2.7")!) == plain)
        #expect(limiter.clientKey(rule: 0, address: IPAddress(bytes: [192, 0, 2, 7])!) == plain)
        #expect(limiter.clientKey(rule: 0, address: IPAddress("::192.0.2.7")!) != plain)  // IPv4-compatible is IPv6
    }

    @Test(arguments: [
        (UInt64(0), "0000000000000000"),
        (0x0123_4567_89ab_cdef, "0123456789abcdef"),
        (UInt64.max, "ffffffffffffffff"),
        (0xa129_ca61_49be_45e5, "a129ca6149be45e5"),
    ])
    func displayHash(raw: UInt64, text: String) {
        #expect(RateLimitKey(rawValue: raw).displayHash == text)
        #expect(RateLimitKey(rawValue: raw).description == text)
    }

    /// The display form of a header key never contains the header value.
    @Test func displayHashIsNotTheSecret() {
        let limiter = Self.limiter()
        let key = limiter.headerKey(rule: 0, value: "0123456789abcdef".utf8)
        #expect(key.displayHash.utf8.count == 16)
        #expect(key.displayHash != "0123456789abcdef")
    }
}
