*** Settings ***
Documentation     ``crew.stream`` and ``crew.astream`` end to end, through litellm's real HTTP
...               path to the fake server streaming word by word: the text streamed per task
...               is the task's answer, usage is the server's own count, and leaving a stream
...               early pays the cut-off reply in full and leaves nothing reserved.
Library           StreamingLibrary.py
Suite Setup       Start Streaming Server    gap_ms=5
Suite Teardown    Stop Streaming Server


*** Test Cases ***
A Streamed Kickoff Shows Each Task's Answer And Reports The Server's Count
    FOR    ${mode}    IN    sync    async
        ${out}=    Stream Crew To Its End    ${mode}
        Should Be Equal    ${out}[text]    ${out}[raw]
        Should Be Equal    ${out}[run_ids]    ${{[$out['run_id']]}}
        FOR    ${task}    IN    first    second
            ${served}=    Served Tokens    ${task}
            Should Be Equal As Integers    ${out}[usage][${task}]    ${served}
        END
        Every Request Was Streamed
    END

Leaving A Stream Early Cancels The Kickoff And Pays The Cut-Off Reply
    ${out}=    Leave A Long Stream After    5
    Should Be Equal    ${out}[error]    CancelledError
    Should Be Equal    ${out}[outcomes]    ${{['cancelled']}}
    Should Be Equal As Integers    ${out}[status]    499
    Should Be True    $out['spent'] >= $out['billed']
    Should Be Equal As Integers    ${out}[reserved]    0
