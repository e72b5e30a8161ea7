use super::*;

#[test]
fn xorshift_is_deterministic_and_bounded() {
    let mut a = XorShift::new(42);
    let mut b = XorShift::new(42);
    for _ in 0..1000 {
        assert_eq!(a.next_u64(), b.next_u64());
    }
    let mut r = XorShift::new(0);
    let mut seen = [0u32; 10];
    for _ in 0..100_000 {
        let v = r.below(10);
        seen[v as usize] += 1;
        let u = r.unit();
        assert!((0.0..1.0).contains(&u));
    }
    // Uniform enough: every bucket within 10% of 10,000.
    assert!(
        seen.iter().all(|&n| (9_000..11_000).contains(&n)),
        "{seen:?}"
    );
    assert_ne!(XorShift::new(1).next_u64(), XorShift::new(2).next_u64());
}

fn histogram(n: u64, theta: f64, samples: usize) -> Vec<u64> {
    let z = Zipf::new(n, theta);
    let mut r = XorShift::new(7);
    let mut counts = vec![0u64; n as usize + 1];
    for _ in 0..samples {
        let k = z.sample(&mut r);
        assert!((1..=n).contains(&k), "rank {k} outside 1..={n}");
        counts[k as usize] += 1;
    }
    counts
}

#[test]
fn zipf_matches_its_distribution() {
    for theta in [0.6, 1.0, 1.2, 2.0] {
        let n = 1000;
        let samples = 400_000;
        let counts = histogram(n, theta, samples);
        let norm: f64 = (1..=n).map(|k| (k as f64).powf(-theta)).sum();
        // The head ranks carry the most mass; check them against the exact pmf.
        for k in 1..=5u64 {
            let expected = (k as f64).powf(-theta) / norm * samples as f64;
            let got = counts[k as usize] as f64;
            assert!(
                (got - expected).abs() <= 0.05 * expected + 50.0,
                "theta {theta} rank {k}: {got} samples, expected about {expected:.0}"
            );
        }
        // p(1)/p(2) = 2^theta.
        let ratio = counts[1] as f64 / counts[2] as f64;
        assert!(
            (ratio / 2f64.powf(theta) - 1.0).abs() < 0.05,
            "theta {theta}: p1/p2 = {ratio}"
        );
    }
}

#[test]
fn zipf_edge_cases() {
    let z = Zipf::new(1, 1.2);
    let mut r = XorShift::new(3);
    assert!((0..1000).all(|_| z.sample(&mut r) == 1));
    // A tiny theta is close to uniform.
    let counts = histogram(10, 0.01, 100_000);
    assert!(
        counts[1..].iter().all(|&c| (8_500..11_500).contains(&c)),
        "{counts:?}"
    );
}
