use super::*;

#[test]
fn spreads() {
    assert_eq!(
        Spread::of(&[3.0, 1.0, 2.0]),
        Spread {
            min: 1.0,
            median: 2.0,
            max: 3.0
        }
    );
    assert_eq!(Spread::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    assert_eq!(Spread::of(&[]), Spread::default());
}
