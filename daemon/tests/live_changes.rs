//! A live change's element changes, computed from the change alone
//! ([`shieldd::ruleset::live_changes`]), are exactly the difference of the tables built before
//! and after it ([`shieldd::ruleset::element_changes`]) — over thousands of random changes of
//! addresses and overlapping networks, both families, with profiles that hold some of the same
//! targets. And [`Intent::undo`] puts every list back as it was, order included. Pure: no root.

#![allow(clippy::unwrap_used, clippy::panic, reason = "tests")]

use ipnet::IpNet;
use shieldd::intent::{Direction, Intent, Target};
use shieldd::ruleset::{Policy, ProfileIndex, build, element_changes, live_changes};

/// A small deterministic generator (xorshift64*), so that a failure is reproducible by seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Targets that overlap in every way the sets care about: addresses inside networks, networks
/// inside networks, neighbours that merge, and both families.
fn universe() -> Vec<IpNet> {
    let mut nets: Vec<IpNet> = (0..16)
        .map(|i| format!("10.0.0.{i}/32").parse().unwrap())
        .collect();
    nets.extend((0..8).map(|i| format!("2001:db8::{i}/128").parse::<IpNet>().unwrap()));
    for net in [
        "10.0.0.0/30",
        "10.0.0.4/30",
        "10.0.0.0/29",
        "10.0.0.8/29",
        "10.0.0.0/28",
        "10.0.1.0/24",
        "2001:db8::/126",
        "2001:db8::4/126",
        "2001:db8::/125",
    ] {
        nets.push(net.parse().unwrap());
    }
    nets
}

/// The live lists of `intent`, in their order.
fn in_order(intent: &Intent) -> (Vec<IpNet>, Vec<IpNet>) {
    (
        intent.allowed.iter().copied().collect(),
        intent.denied.iter().copied().collect(),
    )
}

fn policy(intent: &Intent, profile: &[IpNet]) -> Policy {
    intent.policy(profile, &[])
}

#[test]
fn live_changes_equal_the_difference_of_full_rebuilds() {
    let universe = universe();
    for seed in 1..=40_u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let profile: Vec<IpNet> = (0..rng.below(5)).map(|_| *rng.pick(&universe)).collect();
        let index = ProfileIndex::new(&profile);
        let mut intent = Intent::default();
        for step in 0..200 {
            let before_intent = intent.clone();
            let before = build(&policy(&intent, &profile));
            let direction = if rng.below(2) == 0 {
                Direction::Allow
            } else {
                Direction::Deny
            };
            let targets: Vec<Target> = (0..=rng.below(4))
                .map(|_| Target::Net(*rng.pick(&universe)))
                .collect();
            let applied = intent.apply(direction, &targets);
            let after = build(&policy(&intent, &profile));
            let expected = element_changes(&before, &after).unwrap();
            let got = live_changes(
                &index,
                &intent.allowed,
                &intent.denied,
                &applied.net_moves(),
            );
            assert_eq!(
                got, expected,
                "seed {seed}, step {step}: {direction:?} {targets:?} on {before_intent:?} \
                 with profile {profile:?}"
            );
            if rng.below(4) == 0 {
                intent.undo(&applied);
                // In order: the sets' own equality does not look at it.
                assert_eq!(
                    in_order(&intent),
                    in_order(&before_intent),
                    "seed {seed}, step {step}: undo of {direction:?} {targets:?}"
                );
                assert_eq!(intent.mode, before_intent.mode);
            }
        }
    }
}

#[test]
fn a_change_of_one_address_touches_one_element_whatever_the_lists_hold() {
    let mut intent = Intent::default();
    let many: Vec<Target> = (0..50_000_u32)
        .map(|i| {
            Target::Net(IpNet::from(std::net::IpAddr::from(
                (0x0b00_0000 + i).to_be_bytes(),
            )))
        })
        .collect();
    intent.apply(Direction::Allow, &many);
    let profile: Vec<IpNet> = vec!["192.0.2.0/24".parse().unwrap()];
    let index = ProfileIndex::new(&profile);
    let one = [Target::Net("198.51.100.7/32".parse().unwrap())];
    let applied = intent.apply(Direction::Allow, &one);
    let changes = live_changes(
        &index,
        &intent.allowed,
        &intent.denied,
        &applied.net_moves(),
    );
    assert!(changes.removes.is_empty(), "{changes:?}");
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes.adds[0].name, "allow_v4");
    // Denying it withdraws it from the allow set and puts it in the deny set: two elements.
    let applied = intent.apply(Direction::Deny, &one);
    let changes = live_changes(
        &index,
        &intent.allowed,
        &intent.denied,
        &applied.net_moves(),
    );
    assert_eq!(changes.len(), 2, "{changes:?}");
    assert_eq!(changes.removes[0].name, "allow_v4");
    assert_eq!(changes.adds[0].name, "deny_v4");
}
