// Shards Pulse's MongoDB collections on a sharded cluster. Run once against a mongos,
// on the database the app uses (PULSE_MONGO_DB), before or after the app first starts:
//
//   mongosh "mongodb://mongos:27017/pulse" deploy/mongo/shard-collections.js
//
// The keys are those of storage/mongo/ (SHARD_KEY in each repository; README "Running
// at scale" says why); tests/deploy/test_mongo_sharding.py checks this file against them
// and every index the app creates against its collection's key. Ranged keys: the unique
// indexes (idempotent sends, one notification per cause) start with the shard key, and
// MongoDB enforces uniqueness on a sharded collection only then, and only on ranged keys.
// The app creates its indexes at start (createIndexes); the key's own supporting index
// is created here first, so this script also runs on a database the app has not seen.

const database = db.getName();
sh.enableSharding(database);

// Messages: a conversation's history lives on one shard; sends and pages target it.
db.messages.createIndex({ conversationId: 1, createdAt: -1, _id: -1 }, { name: "conversation_history_order" });
sh.shardCollection(`${database}.messages`, { conversationId: 1 });

// Notifications: a user's list, count and marks target the shard holding the user.
db.notifications.createIndex({ userId: 1, createdAt: -1, _id: -1 }, { name: "user_recent_order" });
sh.shardCollection(`${database}.notifications`, { userId: 1 });

// Contributions to grouped notifications (who is counted in a group): by recipient, like
// the notifications they count for.
db.notification_contributions.createIndex({ userId: 1, groupId: 1, at: -1, _id: -1 }, { name: "user_group_recent" });
sh.shardCollection(`${database}.notification_contributions`, { userId: 1 });

// Conversations: not sharded (listed by member, an array; unique direct pairs).
// They stay whole on the database's primary shard.
