"""Every reason a row or a drop is given, in one place: Chinese for the clerk, English after it.

Reasons never repeat an ID number (they end up in reports, logs and mail): a reason may quote the
cell it is about (``{text}``), so every reason a row or a drop is given passes ``hide_numbers``
(``RowState.stop``, ``hidden_reason``), whatever column the number was typed in.
"""
from __future__ import annotations

from mailserver.errors import CivicmailError
from mailserver.identity.idnumber import NUMBER_HIDDEN, hide_numbers  # noqa: F401 (reasons' users import them here)

# validate
REQUIRED_EMPTY = "必填项为空 / required, but empty"
ID_NUMBER_PREFIX = "身份证号码校验失败 / "
ID_NUMBER_IN_NUMBER_CELL = ("身份证号码被 Excel 存为数字，后几位已丢失，请将该列设为文本格式后重新输入 / "
                            "the ID number is in a number cell and Excel kept only 15 of its 18 digits: "
                            "format the column as Text and enter the numbers again")
EXTRA_CELLS = "多出的单元格 / more cells than columns ({detail})"
NOT_JSON = "不是有效的 JSON / not valid JSON"
NOT_JSON_OBJECT = "不是 JSON 对象 / not a JSON object"
BAD_DATE = "日期格式应为 YYYY-MM-DD / date must be YYYY-MM-DD, YYYY/MM/DD or YYYY年MM月DD日: {text}"
NOT_A_DATE = "不是有效日期 / not a real date: {text}"
BAD_MONEY = "金额格式不正确 / not an amount in yuan with at most two decimals: {text}"
BAD_INT = "应为整数 / not a whole number: {text}"
BAD_PATTERN = "格式不符 / does not match the expected form {pattern}: {text}"
TOO_SMALL = "不得小于 {limit} / must be at least {limit}: {text}"
TOO_LARGE = "不得大于 {limit} / must be at most {limit}: {text}"

# match, consent, deliver, render
NO_ACCOUNT = "未开通市民邮箱，转纸质邮寄 / no mailbox for this ID number: sent to paper mail"
DISABLED = "市民邮箱已停用，转纸质邮寄 / the citizen's mailbox is disabled: sent to paper mail"
NAME_DIFFERS = "姓名与登记信息不符，已暂缓 / name differs from the registered name: held"
OPTED_OUT = "本人已退订此类对账信息 / the citizen opted out of this statement"
DUPLICATE = "此通知已送达过 / this notice was already delivered (an earlier row or drop)"
RENDER_FAILED = "模板无法生成此通知 / template could not render this row: {detail}"
# deliver, external mail store (store.mode = "external"): the LMTP server's reply for the mailbox
EXTERNAL_REFUSED = "外部邮箱服务器拒收 / the external mail store refused it: {reply}"
EXTERNAL_DEFERRED = ("外部邮箱服务器暂时无法接收，可稍后重试 / the external mail store deferred it (retry with "
                     "`drop retry`): {reply}")

# reading: a row that cannot be read is invalid, the rows after it are read
AT_LINE = "第 {line} 行 / line {line}: {reason}"
LINE_TOO_LONG = "此行超过 {limit} 个字符 / the line is longer than {limit} characters"
CELL_TOO_LONG = "单元格超过 {limit} 个字符 / a cell is longer than {limit} characters"
CSV_ROW = "CSV 格式错误 / CSV format error: {detail}"
JSON_TOO_DEEP = "JSON 嵌套超过 {limit} 层 / JSON nested deeper than {limit} levels"

# the file as a whole
EMPTY_FILE = "文件为空 / the file is empty (no header row)"
NO_ROWS = "文件没有数据行 / the file has a header but no rows"
MISSING_COLUMNS = "缺少必需的列 / required columns missing: {columns}"
NOT_XLSX = "无法读取的 XLSX 工作簿 / not a readable XLSX workbook ({error})"
XLSX_TOO_LARGE = ("XLSX 工作簿解压后过大 / the workbook unzips to {size:,} bytes, more than the limit of {limit:,} "
                  "(delivery.xlsx_max_unzipped_bytes): send it as CSV")
XLSX_TOO_MANY_STRINGS = ("XLSX 工作簿的文本过多 / the workbook holds more than {limit:,} shared strings "
                         "(delivery.xlsx_max_shared_strings): send it as CSV")
XLSX_DTD = "XLSX 工作簿含有 DTD，拒绝处理 / the workbook declares a DTD or XML entities: refused"
XLSX_NOT_UTF8 = "XLSX 工作簿的 XML 不是 UTF-8 / the workbook has XML parts not in UTF-8: refused"
NOT_TEXT = "文件编码无法识别 / the file is not valid {encoding} text (use --encoding)"
ALREADY_RUN = ("此文件已处理过 / this file was already run as drop {drop_id} ({delivered} delivered); "
               "--force runs it again")

# drops by mail: the summary sent back to the agency
MAIL_NO_NOTICE_TYPE = ("未能识别通知类型：请在主题中写明通知类型编号，或使用 X-Civicmail-Notice-Type 头。"
                       " / No notice type: name it in the subject or an X-Civicmail-Notice-Type header.")
MAIL_NO_ATTACHMENT = "邮件中没有 CSV、JSONL 或 XLSX 附件。 / No CSV, JSONL or XLSX attachment."
MAIL_NOT_RUN = "{name}: 未处理 / not run: {error}"
MAIL_FAILED = "邮件无法处理 / the message could not be processed: {error}"
MAIL_SUMMARY_HEAD = "数据文件处理结果 / What became of the drop:"

# a fault inside civicmail on one row (the row fails; `drop retry` runs it again after a fix)
INTERNAL = "内部错误，已暂缓 / internal error at {stage} ({error}): the row can be retried"
# ... or on one spooled or mailed drop (set aside; the next drop runs)
INTERNAL_DROP = "内部错误，此文件未处理 / internal error ({error}): the file was set aside, the operator's log has the details"


def hidden_reason(exc: BaseException) -> str:
    """Why a drop as a whole did not run, as the agency and the spool's note may read it: the
    message of an error civicmail raised on purpose, else only the error's kind (the text of an
    unexpected exception is for the operator's log)."""
    if isinstance(exc, CivicmailError):
        return hide_numbers(str(exc))
    return INTERNAL_DROP.format(error=exc.__class__.__name__)
