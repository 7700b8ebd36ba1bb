//! [`AutoscalerConfig`]: the node groups the simulated node autoscaler grows on demand, the
//! autoscaler it imitates (cluster-autoscaler or Karpenter: the Events it records on pods),
//! and what the cloud does when asked for a node. Node groups parse from the CLI's
//! `--node-group` syntax ([`NodeGroup::from_str`]).

use std::str::FromStr;
use std::time::Duration;

use super::NodeCapacity;

/// Which node autoscaler is imitated: the Events it records on the pods it considers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AutoscalerStyle {
    /// kubernetes/autoscaler's cluster-autoscaler: `TriggeredScaleUp`, `NotTriggerScaleUp`.
    #[default]
    ClusterAutoscaler,
    /// kubernetes-sigs/karpenter: `Nominated`, `FailedScheduling` from `karpenter`.
    Karpenter,
}

impl FromStr for AutoscalerStyle {
    type Err = String;
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "cluster-autoscaler" => Ok(Self::ClusterAutoscaler),
            "karpenter" => Ok(Self::Karpenter),
            other => Err(format!(
                "unknown autoscaler {other:?} (expected cluster-autoscaler or karpenter)"
            )),
        }
    }
}

/// What the cloud does when the autoscaler asks for a node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Provisioning {
    /// The node registers this long after the scale-up.
    After(Duration),
    /// The cloud accepts the scale-up but the node never registers.
    Never,
    /// The cloud refuses the scale-up (quota, stock-out) with this error.
    Refused(String),
}

/// A group of identical nodes the autoscaler grows, one node per scale-up.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeGroup {
    /// The group's id as the autoscaler names it (`gpu`); nodes are `<name>-<n>`
    /// (cluster-autoscaler) or `<name>-<5 letters>` (Karpenter's NodeClaims).
    pub name: String,
    /// Allocatable of each node of the group.
    pub node_capacity: NodeCapacity,
    /// Nodes that exist at start.
    pub initial_size: u32,
    /// The group never grows beyond this many nodes.
    pub max_size: u32,
    pub provisioning: Provisioning,
}

/// The simulated node autoscaler.
#[derive(Debug, Clone, PartialEq)]
pub struct AutoscalerConfig {
    pub style: AutoscalerStyle,
    pub node_groups: Vec<NodeGroup>,
    /// How often it looks at unschedulable pods (cluster-autoscaler's `--scan-interval`
    /// is 10 s; Karpenter batches pods for 1–10 s).
    pub scan_interval: Duration,
}

impl Default for AutoscalerConfig {
    fn default() -> Self {
        Self {
            style: AutoscalerStyle::ClusterAutoscaler,
            node_groups: Vec::new(),
            scan_interval: Duration::from_secs(10),
        }
    }
}

/// `name=gpu,cpu=16,memory=64Gi,pods=110,initial=1,max=3,delay-ms=30000` plus optionally
/// `provisioning=never` or `refuse=<cloud error>` (the rest of the text, commas included).
impl FromStr for NodeGroup {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (fields, refusal) = match text.split_once(",refuse=") {
            Some((fields, refusal)) => (fields, Some(refusal.to_owned())),
            None => (text, None),
        };
        let mut group = NodeGroup {
            name: String::new(),
            node_capacity: NodeCapacity {
                pods: 110,
                ..NodeCapacity::default()
            },
            initial_size: 0,
            max_size: 1,
            provisioning: Provisioning::After(Duration::from_secs(60)),
        };
        for field in fields.split(',').filter(|field| !field.is_empty()) {
            let (key, value) = field
                .split_once('=')
                .ok_or_else(|| format!("node group field {field:?} is not key=value"))?;
            apply_field(&mut group, key, value)?;
        }
        if let Some(error) = refusal {
            group.provisioning = Provisioning::Refused(error);
        }
        if group.name.is_empty() {
            return Err(format!("node group {text:?} has no name=..."));
        }
        Ok(group)
    }
}

fn apply_field(group: &mut NodeGroup, key: &str, value: &str) -> Result<(), String> {
    let number = |what: &str| {
        value
            .parse::<u64>()
            .map_err(|_| format!("node group {what} {value:?} is not a whole number"))
    };
    match key {
        "name" => group.name = value.to_owned(),
        "cpu" => group.node_capacity.cpu = value.to_owned(),
        "memory" => group.node_capacity.memory = value.to_owned(),
        "pods" => group.node_capacity.pods = u32::try_from(number("pods")?).unwrap_or(u32::MAX),
        "initial" => group.initial_size = u32::try_from(number("initial")?).unwrap_or(u32::MAX),
        "max" => group.max_size = u32::try_from(number("max")?).unwrap_or(u32::MAX),
        "delay-ms" => {
            group.provisioning = Provisioning::After(Duration::from_millis(number("delay-ms")?))
        }
        "provisioning" if value == "never" => group.provisioning = Provisioning::Never,
        other => {
            return Err(format!(
                "unknown node group field {other:?} (expected name, cpu, memory, pods, initial, \
                 max, delay-ms, provisioning=never, refuse=<error>)"
            ))
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_groups_parse_from_the_cli_syntax() {
        let group: NodeGroup = "name=gpu,cpu=16,memory=64Gi,initial=1,max=3,delay-ms=30000"
            .parse()
            .unwrap();
        assert_eq!(group.name, "gpu");
        assert_eq!(group.node_capacity.cpu, "16");
        assert_eq!(group.node_capacity.memory, "64Gi");
        assert_eq!((group.initial_size, group.max_size), (1, 3));
        assert_eq!(
            group.provisioning,
            Provisioning::After(Duration::from_secs(30))
        );
        let never: NodeGroup = "name=gpu,provisioning=never".parse().unwrap();
        assert_eq!(never.provisioning, Provisioning::Never);
        let refused: NodeGroup = "name=gpu,refuse=QUOTA_EXCEEDED: Quota 'GPUS', limit 0, region x"
            .parse()
            .unwrap();
        assert_eq!(
            refused.provisioning,
            Provisioning::Refused("QUOTA_EXCEEDED: Quota 'GPUS', limit 0, region x".into())
        );
    }

    #[test]
    fn bad_node_groups_say_what_is_wrong() {
        for (text, complaint) in [
            ("cpu=4", "has no name"),
            ("name=gpu,max=three", "max \"three\" is not a whole number"),
            ("name=gpu,size=3", "unknown node group field \"size\""),
            ("name=gpu,max", "is not key=value"),
        ] {
            let error = text.parse::<NodeGroup>().unwrap_err();
            assert!(error.contains(complaint), "{text}: {error}");
        }
        assert!("autoscaler"
            .parse::<AutoscalerStyle>()
            .unwrap_err()
            .contains("expected cluster-autoscaler or karpenter"));
    }
}
