//! Groups: a send reaches 100 members; the 101st is refused.

use meridian_sdk::frames::{ConversationView, RegisterResponse};
use meridian_sdk::{Client, ErrorCode, SdkError, SentInfo};

use crate::support::{Harness, PATIENCE};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_of_100_receives_one_send_and_refuses_a_101st_member() {
    let mut h = Harness::start().await;
    let mut users = Vec::new();
    for i in 0..101 {
        users.push(h.user(&format!("user{i}")).await);
    }
    let admin = &users[0];
    let others: Vec<String> = users[1..100].iter().map(|u| u.user_id.clone()).collect();
    let group = h
        .rest
        .with_token(&admin.token)
        .create_group("hundred", &others)
        .await
        .unwrap();
    assert_eq!(group.members.len(), 100);

    let refused = h
        .rest
        .with_token(&admin.token)
        .add_members(&group.conv_id, &[users[100].user_id.clone()])
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::GroupFull));
    assert!(matches!(
        refused,
        meridian_sdk::SdkError::Api { status: 409, .. }
    ));

    // Creating a group of 101 at once is refused the same way.
    let too_many: Vec<String> = users[1..].iter().map(|u| u.user_id.clone()).collect();
    let refused = h
        .rest
        .with_token(&admin.token)
        .create_group("too big", &too_many)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::GroupFull));

    let mut clients = Vec::new();
    for user in &users[..100] {
        clients.push(h.client(&user.token).await);
    }
    let id = clients[0].new_client_msg_id();
    let sent = clients[0]
        .send(&group.conv_id, &id, "hello, all", None)
        .await
        .unwrap();
    for client in &mut clients {
        let got = client
            .poll_until(PATIENCE, |c| {
                c.timeline(&group.conv_id)
                    .iter()
                    .any(|m| m.msg_id == sent.msg_id)
            })
            .await
            .unwrap();
        assert!(got, "every member's device receives the send");
        assert_eq!(client.timeline(&group.conv_id).len(), 1);
    }
    // The 101st user is not a member and received nothing of it.
    let outsider = h
        .rest
        .with_token(&users[100].token)
        .members(&group.conv_id)
        .await
        .unwrap_err();
    assert_eq!(outsider.code(), Some(ErrorCode::NotFound));
    h.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_admins_change_a_group_and_members_may_leave() {
    let h = Harness::start().await;
    let Trio {
        admin,
        member,
        newcomer,
        group,
    } = trio(&h, "club").await;
    let as_member = h.rest.with_token(&member.token);
    let refused = as_member
        .add_members(&group.conv_id, std::slice::from_ref(&newcomer.user_id))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    let added = h
        .rest
        .with_token(&admin.token)
        .add_members(&group.conv_id, std::slice::from_ref(&newcomer.user_id))
        .await
        .unwrap();
    assert_eq!(added.members.len(), 3);
    assert!(added.version > group.version);
    let refused = as_member
        .rename(&group.conv_id, "mine now")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    let refused = as_member
        .remove_member(&group.conv_id, &newcomer.user_id)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::Forbidden));
    let renamed = h
        .rest
        .with_token(&admin.token)
        .rename(&group.conv_id, "the club")
        .await
        .unwrap();
    assert_eq!(renamed.name, "the club");
    let left = as_member
        .remove_member(&group.conv_id, &member.user_id)
        .await
        .unwrap();
    assert_eq!(left.members.len(), 2);
    assert_eq!(
        as_member.members(&group.conv_id).await.unwrap_err().code(),
        Some(ErrorCode::NotFound)
    );
    let removed = h
        .rest
        .with_token(&admin.token)
        .remove_member(&group.conv_id, &newcomer.user_id)
        .await
        .unwrap();
    assert_eq!(removed.members.len(), 1);
    // The last admin leaving hands the group to the longest-standing member.
    let trio = h
        .rest
        .with_token(&admin.token)
        .create_group("trio", &[member.user_id.clone(), newcomer.user_id.clone()])
        .await
        .unwrap();
    let after = h
        .rest
        .with_token(&admin.token)
        .remove_member(&trio.conv_id, &admin.user_id)
        .await
        .unwrap();
    assert_eq!(
        after.members.iter().filter(|m| m.role == "admin").count(),
        1
    );
    h.stop().await;
}

/// A send's fan-out follows every membership change at once: the core keeps
/// the member ids of recently used conversations, and must never send with
/// (or authorize against) a list older than the conversation record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_follow_membership_changes_at_once() {
    let mut h = Harness::start().await;
    let Trio {
        admin,
        member,
        newcomer,
        group,
    } = trio(&h, "changing").await;
    let mut admin_client = h.client(&admin.token).await;
    let mut member_client = h.client(&member.token).await;
    let mut newcomer_client = h.client(&newcomer.token).await;

    // Both members send: the member list is now read (and kept) by the core.
    let first = send(&mut admin_client, &group.conv_id, "before")
        .await
        .unwrap();
    send(&mut member_client, &group.conv_id, "me too")
        .await
        .unwrap();

    // Removed: the member's next send is refused at once.
    h.rest
        .with_token(&admin.token)
        .remove_member(&group.conv_id, &member.user_id)
        .await
        .unwrap();
    let refused = send(&mut member_client, &group.conv_id, "still here?")
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Some(ErrorCode::NotFound));

    // Added: the very next send reaches the newcomer, and not the removed.
    h.rest
        .with_token(&admin.token)
        .add_members(&group.conv_id, std::slice::from_ref(&newcomer.user_id))
        .await
        .unwrap();
    let after = send(&mut admin_client, &group.conv_id, "after")
        .await
        .unwrap();
    assert!(
        receives(&mut newcomer_client, &group.conv_id, &after.msg_id).await,
        "the newcomer receives the first send after joining"
    );
    assert!(
        !has(&newcomer_client, &group.conv_id, &first.msg_id),
        "nothing sent before joining is delivered"
    );
    // The removed member: a direct message sent after "after" lands in
    // their inbox behind anything "after" could have put there (an inbox is
    // in arrival order), so once it is here, "after" would be too.
    let direct = h
        .rest
        .with_token(&admin.token)
        .direct(&member.user_id)
        .await
        .unwrap();
    let marker = send(&mut admin_client, &direct.conv_id, "marker")
        .await
        .unwrap();
    assert!(receives(&mut member_client, &direct.conv_id, &marker.msg_id).await);
    assert!(
        has(&member_client, &group.conv_id, &first.msg_id),
        "the member received what was sent before the removal"
    );
    assert!(
        !has(&member_client, &group.conv_id, &after.msg_id),
        "a removed member receives nothing sent after the removal"
    );
    h.stop().await;
}

/// Whether `client` has shown `msg_id` in `conv_id`.
fn has(client: &Client, conv_id: &str, msg_id: &str) -> bool {
    client.timeline(conv_id).iter().any(|m| m.msg_id == msg_id)
}

/// Polls `client` until it shows `msg_id` in `conv_id` (false if it never does).
async fn receives(client: &mut Client, conv_id: &str, msg_id: &str) -> bool {
    client
        .poll_until(PATIENCE, |c| has(c, conv_id, msg_id))
        .await
        .unwrap()
}

/// An admin, a member and a newcomer (not yet in), and the group of the
/// first two.
struct Trio {
    admin: RegisterResponse,
    member: RegisterResponse,
    newcomer: RegisterResponse,
    group: ConversationView,
}

async fn trio(h: &Harness, name: &str) -> Trio {
    let admin = h.user("admin").await;
    let member = h.user("member").await;
    let newcomer = h.user("newcomer").await;
    let group = h
        .rest
        .with_token(&admin.token)
        .create_group(name, std::slice::from_ref(&member.user_id))
        .await
        .unwrap();
    Trio {
        admin,
        member,
        newcomer,
        group,
    }
}

/// Sends `payload` from `client` under a fresh `client_msg_id`.
async fn send(client: &mut Client, conv_id: &str, payload: &str) -> Result<SentInfo, SdkError> {
    let id = client.new_client_msg_id();
    client.send(conv_id, &id, payload, None).await
}
