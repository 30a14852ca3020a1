//! COM_STATISTICS (`mariadb-admin status`): the server's status summary
//! (uptime, threads, questions, slow queries, opened and open tables,
//! queries per second), counters `SHOW GLOBAL STATUS` reads. It is decided
//! as that statement, like COM_INIT_DB as `USE`: the policies in force
//! (`defaultAction: deny`, a rule on `select`), a revoked or unbound
//! identity and the rate limit apply, and it is on record before the
//! server is asked. A `requireApproval` decision refuses it (the text to
//! ask approval for is `SHOW GLOBAL STATUS`). Its answer is one string
//! without table data: passed on as the server sent it.

use super::*;

/// The statement COM_STATISTICS is decided and recorded as.
const STATISTICS_AS: &str = "SHOW GLOBAL STATUS";

impl Session<'_> {
    /// A COM_STATISTICS (`payload`): decided, put on record and passed on,
    /// or refused with an ERR packet (the session goes on).
    pub(super) async fn statistics(
        &mut self,
        payload: &[u8],
        reply_seq: u8,
    ) -> Result<(), SessionError> {
        self.follow();
        let decided = match self.decide(Ok(STATISTICS_AS.to_string())) {
            Ok(d) => d,
            Err(why) => return self.refuse_undecided(&why, reply_seq, false).await,
        };
        let decision = &decided.decision;
        let refused = self
            .refusal(&decided.text, decision, true)
            .or_else(|| {
                (decision.decision.enforced == Action::RequireApproval).then(|| {
                    format!(
                        "COM_STATISTICS is decided as {STATISTICS_AS}, which needs approval ({}): refused; ask for approval of {STATISTICS_AS} and send that statement",
                        decision.decision.reason
                    )
                })
            });
        if let Some(why) = refused {
            let _ = self.record(decision, Some(&why), false);
            return self.send_refusal(reply_seq, &why).await;
        }
        if let Err(e) = self.record(decision, None, false) {
            let why = format!(
                "COM_STATISTICS not run: Sluice could not write its audit record ({e}); audit is write-ahead"
            );
            let mut reply = Reply::new(reply_seq);
            reply.push(&packet::err_payload(ACCESS_DENIED, "HY000", &why));
            self.client.write_all(&reply.out).await?;
            return Ok(());
        }
        let started = Instant::now();
        self.up.command(payload).await?;
        let answer = self.up.read().await?;
        let mut outcome = Outcome::default();
        if answer.payload.first() == Some(&0xFF) {
            outcome.error = Some(packet::parse_err(&answer.payload).2);
        }
        let mut reply = Reply::new(reply_seq);
        reply.push(&answer.payload);
        self.client.write_all(&reply.out).await?;
        self.ctx.metrics.upstream_latency(started.elapsed());
        self.result_event(decision, outcome, started);
        Ok(())
    }
}
