//! `weir group list|describe|reset-offsets|delete`.

use serde_json::json;
use weir_client::{Admin, Start};

use super::{block_on, number, table, Args, Failure, COMMON_FLAGS};

pub fn usage() -> String {
    format!(
        "usage: weir group list
       weir group describe GROUP
       weir group reset-offsets GROUP --topic TOPIC
                  (--to-earliest | --to-latest | --to-offset N | --to-time MILLIS)
       weir group delete GROUP

  reset-offsets and delete need a group without members: stop its consumers first.
  --to-time     the first record at or after MILLIS (milliseconds since the epoch)
{COMMON_FLAGS}"
    )
}

pub fn run(args: &[String]) -> Result<(), Failure> {
    let usage = usage();
    let Some(command) = args.first().map(String::as_str) else {
        return Err(Failure::Usage(usage));
    };
    let a = Args::parse(
        &args[1..],
        &["--topic", "--to-offset", "--to-time"],
        &["--to-earliest", "--to-latest"],
        &usage,
    )?;
    let group = || -> Result<&str, Failure> {
        match a.positional.as_slice() {
            [group] => Ok(group),
            [] => Err(Failure::Usage(format!(
                "weir group {command} needs a group\n\n{usage}"
            ))),
            _ => Err(Failure::Usage(format!(
                "weir group {command} takes one group\n\n{usage}"
            ))),
        }
    };
    match command {
        "list" => {
            if !a.positional.is_empty() || !a.flags.is_empty() {
                return Err(Failure::Usage(format!(
                    "weir group list takes no arguments\n\n{usage}"
                )));
            }
            block_on(async {
                let groups = Admin::connect(&a.config()).await?.list_groups().await?;
                if a.json {
                    let list: Vec<_> = groups
                        .iter()
                        .map(|g| {
                            json!({"group": g.group, "state": g.state,
                                   "protocol_type": g.protocol_type, "members": g.members})
                        })
                        .collect();
                    println!("{}", serde_json::Value::Array(list));
                } else {
                    let rows: Vec<Vec<String>> = groups
                        .iter()
                        .map(|g| vec![g.group.clone(), g.state.clone(), g.members.to_string()])
                        .collect();
                    println!("{}", table(&["GROUP", "STATE", "MEMBERS"], &rows));
                }
                Ok(())
            })
        }
        "describe" => {
            let group = group()?;
            block_on(async {
                let d = Admin::connect(&a.config())
                    .await?
                    .describe_group(group)
                    .await?;
                let assignment = |parts: &[(String, Vec<i32>)]| -> String {
                    parts
                        .iter()
                        .map(|(t, ps)| {
                            let ps: Vec<String> = ps.iter().map(i32::to_string).collect();
                            format!("{t}:{}", ps.join(","))
                        })
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                if a.json {
                    let members: Vec<_> = d
                        .members
                        .iter()
                        .map(|m| {
                            let parts: Vec<_> = m
                                .assignment
                                .iter()
                                .map(|(t, ps)| json!({"topic": t, "partitions": ps}))
                                .collect();
                            json!({"member_id": m.member_id, "client_id": m.client_id,
                                   "host": m.host, "assignment": parts})
                        })
                        .collect();
                    let offsets: Vec<_> = d
                        .offsets
                        .iter()
                        .map(|o| {
                            json!({"topic": o.topic, "partition": o.partition,
                                   "committed": o.committed, "end": o.end, "lag": o.lag})
                        })
                        .collect();
                    println!(
                        "{}",
                        json!({"group": d.group, "state": d.state, "protocol": d.protocol,
                               "members": members, "offsets": offsets})
                    );
                } else {
                    println!(
                        "group {} is {} ({} member(s){})\n",
                        d.group,
                        d.state,
                        d.members.len(),
                        if d.protocol.is_empty() {
                            String::new()
                        } else {
                            format!(", assignor {}", d.protocol)
                        }
                    );
                    let rows: Vec<Vec<String>> = d
                        .members
                        .iter()
                        .map(|m| {
                            vec![
                                m.member_id.clone(),
                                m.client_id.clone(),
                                m.host.clone(),
                                assignment(&m.assignment),
                            ]
                        })
                        .collect();
                    println!(
                        "{}\n",
                        table(&["MEMBER", "CLIENT", "HOST", "ASSIGNMENT"], &rows)
                    );
                    let rows: Vec<Vec<String>> = d
                        .offsets
                        .iter()
                        .map(|o| {
                            vec![
                                o.topic.clone(),
                                o.partition.to_string(),
                                o.committed.to_string(),
                                o.end.to_string(),
                                o.lag.to_string(),
                            ]
                        })
                        .collect();
                    println!(
                        "{}",
                        table(&["TOPIC", "PARTITION", "COMMITTED", "END", "LAG"], &rows)
                    );
                }
                Ok(())
            })
        }
        "reset-offsets" => {
            let group = group()?;
            let Some(topic) = a.value("--topic") else {
                return Err(Failure::Usage(format!(
                    "reset-offsets needs --topic\n\n{usage}"
                )));
            };
            let mut targets = Vec::new();
            if a.switch("--to-earliest") {
                targets.push(Start::Beginning);
            }
            if a.switch("--to-latest") {
                targets.push(Start::End);
            }
            if let Some(v) = a.value("--to-offset") {
                targets.push(Start::Offset(number("--to-offset", v, &usage)?));
            }
            if let Some(v) = a.value("--to-time") {
                targets.push(Start::Time(number("--to-time", v, &usage)?));
            }
            let [to] = targets.as_slice() else {
                return Err(Failure::Usage(format!(
                    "reset-offsets needs exactly one of --to-earliest, --to-latest, \
                     --to-offset, --to-time\n\n{usage}"
                )));
            };
            block_on(async {
                let admin = Admin::connect(&a.config()).await?;
                let set = admin.reset_offsets(group, topic, *to).await?;
                if a.json {
                    let list: Vec<_> = set
                        .iter()
                        .map(|(p, o)| json!({"topic": topic, "partition": p, "offset": o}))
                        .collect();
                    println!("{}", json!({"group": group, "offsets": list}));
                } else {
                    let rows: Vec<Vec<String>> = set
                        .iter()
                        .map(|(p, o)| vec![topic.to_string(), p.to_string(), o.to_string()])
                        .collect();
                    println!("{}", table(&["TOPIC", "PARTITION", "NEW OFFSET"], &rows));
                }
                Ok(())
            })
        }
        "delete" => {
            let group = group()?;
            if !a.flags.is_empty() {
                return Err(Failure::Usage(format!(
                    "weir group delete takes only a group\n\n{usage}"
                )));
            }
            block_on(async {
                Admin::connect(&a.config())
                    .await?
                    .delete_group(group)
                    .await?;
                if a.json {
                    println!("{}", json!({"deleted": group}));
                } else {
                    println!("deleted group {group}");
                }
                Ok(())
            })
        }
        other => Err(Failure::Usage(format!(
            "unknown group command {other:?}\n\n{usage}"
        ))),
    }
}
