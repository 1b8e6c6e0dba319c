*** Settings ***
Documentation     The same crew, run in all three modes through litellm's real HTTP path, gives
...               the same per-task usage, and each figure equals the server's count for the
...               task's marker. Modes: kickoff (every task on the calling thread), kickoff with
...               the research tasks as async_execution tasks on worker threads, and
...               kickoff_async (the research tasks as asyncio tasks).
Resource          crewline.resource
Suite Setup       Start Fake Server    latency=0.05    tools=True
Suite Teardown    Stop Fake Server


*** Test Cases ***
Kickoff On The Calling Thread Reports The Server's Count Per Task
    ${out}=    Run Research Crew    kickoff    sync
    Each Task Should Report The Server's Count For Its Marker    ${out}    sync
    ${threads}=    Evaluate    {thread for name, thread in $out["tool_calls"]}
    Should Be Equal    ${threads}    ${{ {"MainThread"} }}
    Set Suite Variable    ${SYNC}    ${out}

Kickoff With Async Execution Tasks On Worker Threads Reports The Server's Count Per Task
    ${out}=    Run Research Crew    threads    threads
    Each Task Should Report The Server's Count For Its Marker    ${out}    threads
    ${research threads}=    Evaluate    {t for n, t in $out["tool_calls"] if n == "lookup"}
    Should Not Contain    ${research threads}    MainThread
    Set Suite Variable    ${THREADS}    ${out}

Kickoff Async Reports The Server's Count Per Task
    ${out}=    Run Research Crew    asyncio    asyncio
    Each Task Should Report The Server's Count For Its Marker    ${out}    asyncio
    Set Suite Variable    ${ASYNCIO}    ${out}

All Three Modes Report The Same Per-Task Usage
    FOR    ${task}    IN    @{RESEARCH TASKS}
        Should Be Equal    ${SYNC}[tasks][${task}]    ${THREADS}[tasks][${task}]
        ...    msg=${task}: kickoff and kickoff on threads differ
        Should Be Equal    ${SYNC}[tasks][${task}]    ${ASYNCIO}[tasks][${task}]
        ...    msg=${task}: kickoff and kickoff_async differ
    END
    Should Be Equal    ${SYNC}[usage]    ${ASYNCIO}[usage]
