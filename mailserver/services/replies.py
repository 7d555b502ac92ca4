"""Every text the services mail to citizens and agencies, in one place (Chinese, then English).

``str.format`` fields are filled by the caller; nothing here ever carries exception text.
"""
from __future__ import annotations

# -- topics ---------------------------------------------------------------------------------
SUBSCRIBED_SUBJECT = "已订阅：{topic} / Subscribed: {topic}"
SUBSCRIBED_TEXT = (
    "您已订阅“{topic}”。今后发布的内容将发送到您的邮箱。\n"
    "退订：发送邮件至 {unsubscribe}，或点击邮件客户端中的“退订”按钮。\n\n"
    "You are subscribed to \"{topic}\". To unsubscribe, mail {unsubscribe} or use your mail "
    "client's unsubscribe button.\n")
UNSUBSCRIBED_SUBJECT = "已退订：{topic} / Unsubscribed: {topic}"
UNSUBSCRIBED_TEXT = (
    "您已退订“{topic}”，不会再收到此类邮件。重新订阅：发送邮件至 {subscribe}。\n\n"
    "You are unsubscribed from \"{topic}\". To subscribe again, mail {subscribe}.\n")
TOPIC_HELP_SUBJECT = "如何订阅：{topic} / How to subscribe: {topic}"
TOPIC_HELP_TEXT = (
    "订阅“{topic}”：发送邮件至 {subscribe}（或主题写“订阅”）。\n"
    "退订：发送邮件至 {unsubscribe}（或主题写“退订”）。\n\n"
    "To subscribe to \"{topic}\", mail {subscribe} (or write \"subscribe\" as the subject); to "
    "unsubscribe, mail {unsubscribe} (or \"unsubscribe\").\n")
#: the signature separator is "-- " (RFC 3676 4.3): clients fold or strip what follows it
BULLETIN_FOOTER_TEXT = "\n\n-- \n{topic}。退订 / Unsubscribe: {unsubscribe}\n"
BULLETIN_FOOTER_HTML = '<hr><p style="color:#666;font-size:small">{topic}。退订 / Unsubscribe: ' \
                       '<a href="mailto:{unsubscribe}">{unsubscribe}</a></p>'

# -- statements (optional notice types, the pipeline's List-Unsubscribe mailto) ---------------
STATEMENT_OPTED_OUT_SUBJECT = "已退订：{title} / Opted out: {title}"
STATEMENT_OPTED_OUT_TEXT = "您将不再收到“{title}”。恢复接收：发送主题为“subscribe {id}”的邮件至 {address}。\n\n" \
                           "You will no longer receive \"{title}\". To receive it again, mail {address} " \
                           "with the subject \"subscribe {id}\".\n"
STATEMENT_OPTED_IN_SUBJECT = "已恢复接收：{title} / Opted in: {title}"
STATEMENT_OPTED_IN_TEXT = "您将重新收到“{title}”。\n\nYou will receive \"{title}\" again.\n"
STATEMENT_HELP_SUBJECT = "退订对账信息 / Opting out of statements"
STATEMENT_HELP_TEXT = "请在主题中写“unsubscribe 类型”，可退订的类型：\n{types}\n\n" \
                      "Write \"unsubscribe TYPE\" as the subject; the statements you may opt out of:\n{types}\n"

# -- surveys ---------------------------------------------------------------------------------
BALLOT_SUBJECT = "【民意调查】{title}"
APPRAISAL_SUBJECT = "【满意度评议】{title}"
BALLOT_INTRO = (
    "{title}\n\n"
    "请直接回复本邮件作答：每题写题号和选项，例如“1A 2C”，或每行一题。\n"
    "Reply to this mail with your answers: the question number and your choice, e.g. \"1A 2C\", "
    "or one per line.\n\n")
APPRAISAL_INTRO = (
    "{title}\n\n"
    "请直接回复本邮件，为每个部门打分（1 = 很不满意，5 = 很满意），例如“1:5 2:3”，或每行一项。\n"
    "Reply with a rating from 1 (very dissatisfied) to 5 (very satisfied) for each department, "
    "e.g. \"1:5 2:3\", or one per line.\n\n")
BALLOT_OUTRO = (
    "\n一个实名邮箱一票；再次回复将替换您之前的答案。{secrecy}\n"
    "One real-name mailbox, one vote; a later reply replaces your earlier one. {secrecy_en}\n")
SECRET = "投票内容保密，统计只显示汇总结果。"
SECRET_EN = "Your answers are secret: only totals are published."
NOT_SECRET = "本次调查为记名调查。"
NOT_SECRET_EN = "This survey is not anonymous."
RECEIPT_SUBJECT = "回执：{title} / Receipt: {title}"
RECEIPT_TEXT = (
    "我们已收到并记录您的答案：\n{answers}\n\n"
    "如需修改，再次回复即可（以最后一次为准）。\n"
    "We have recorded your answers (above). To change them, reply again: the last reply counts.\n")
RECEIPT_REPLACED = "（已替换您之前的答案 / this replaces your earlier answers）\n"
FORMAT_SUBJECT = "未能计票：{title} / Vote not counted: {title}"
FORMAT_TEXT = (
    "未能识别您的答案{unknown}，本次回复未计入。\n"
    "请按“题号+选项”作答，例如“1A 2C”或每行一题；可选的题号和选项：\n{choices}\n"
    "Your reply was not counted{unknown_en}. Answer with the question number and choice, e.g. "
    "\"1A 2C\", or one per line. The questions and choices:\n{choices}\n")
UNKNOWN_LIST = "（无效：{tokens}）"
UNKNOWN_LIST_EN = " (not valid: {tokens})"
CLOSED_SUBJECT = "调查已结束：{title} / Survey closed: {title}"
CLOSED_TEXT = (
    "感谢您的参与。本次调查已于 {closed} 结束，您的回复未计入。\n"
    "Thank you for taking part. This survey closed on {closed}; your reply was not counted.\n")

# -- applications ------------------------------------------------------------------------------
ACK_SUBJECT = "受理回执 {number}：{subject}"
ACK_TEXT = (
    "{agency}已收到您的申请，受理编号 {number}。\n"
    "办理进度和结果将回复到本邮件所在的对话中。\n\n"
    "{agency} has received your application, number {number}. Each step and the result will be "
    "sent to you in this thread.\n")
STATUS_SUBJECT = "办理进度 {number}：{status}"
#: an application's status as the citizen reads it in the (Chinese) thread, by the status an
#: operator gives (`application reply --status`); a status not named here, a clerk's own words,
#: is shown as written
STATUS_LABELS = {
    "received": "已受理",
    "in-progress": "办理中",
    "more-info": "需补充材料",
    "approved": "已批准",
    "rejected": "未予批准",
    "completed": "已办结",
    "done": "已办结",
    "withdrawn": "已撤回",
    "replied": "已答复",
}
NOT_A_CITIZEN_TEXT = "只有已登录的实名邮箱可以提交申请。\nOnly a signed-in real-name mailbox may apply.\n"
APPLICATION_HEADER = "X-Civicmail-Application"
APPLICANT_HEADER = "X-Civicmail-Applicant"
#: set by the server on an application signed with the applicant's city certificate (RFC 8551):
#: "verified; signer=ADDRESS; serial=HEX", or "not verified (reason)" for a signature that fails
SIGNATURE_HEADER = "X-Civicmail-Signature"
STATUS_HEADER = "X-Civicmail-Status"
